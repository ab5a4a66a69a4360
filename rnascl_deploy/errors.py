"""The one exception type for problems a user can act on.

Library code raises :class:`RnasclError` with a message that says what was wrong, what was expected and
what to do; the CLI turns it into ``Error: ...`` and exit code 2. Anything else is a bug and keeps its traceback.
"""


class RnasclError(Exception):
    """Bad input or an environment problem the user can fix (missing data, bad budget, corrupt checkpoint)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what a CI system sends on cancel), raised where Ctrl-C would raise KeyboardInterrupt, so that it
    unwinds the same way: finished epochs and stages are kept. The CLI maps it to exit 143."""
