"""The library type-checks clean: mypy over src/ (settings in pyproject.toml), run as part of the suite so CI
and README command 2 both check it."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_mypy_finds_no_errors_in_src():
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Success" in proc.stdout
