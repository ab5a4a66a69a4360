"""The ``rnascl-deploy`` command: a thin click skin over the library; each command parses, calls, prints.

- :mod:`.app`: the group, its root options, and the one place that turns failures into exit codes;
- :mod:`.options`: the options and argument types the commands share, and the recipe a command runs with;
- :mod:`.text`: what the commands print for people (``--json`` prints the library's records as they are);
- one module per command family: :mod:`.teacher` (train, eval, import), :mod:`.train` (search, retrain),
  :mod:`.deploy` (export, verify, bench), :mod:`.run` (run, cost).

Exit codes: 0 success, 1 a failed check (verify: robustness not preserved; cost --budget: does not fit),
2 bad input, usage or environment (the message says what to do; a run directory another process holds, a full or
read-only disk), 130 interrupted by Ctrl-C and 143 by SIGTERM (the message says how to continue).
Machine-readable output (``--json``) goes to stdout; logs and progress bars go to stderr.
"""
from . import deploy, run, teacher, train  # noqa: F401  (each registers its commands on main)
from .app import main

__all__ = ["main"]
