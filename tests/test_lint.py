"""The code passes `ruff check` (rules in pyproject.toml), run as part of the suite beside mypy so CI and README
command 2 both check it."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_ruff_finds_nothing_in_src_and_tests():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "src", "tests"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_the_package_lists_every_name_it_exports():
    import parallama

    assert sorted(parallama.__all__) == sorted(parallama._EXPORTS)


def test_the_error_tree_drawn_in_errors_py_names_every_error_class():
    import inspect
    import re

    from parallama import errors

    classes = {name for name, value in vars(errors).items()
               if inspect.isclass(value) and issubclass(value, errors.ParallamaError)}
    drawn = set(re.findall(r"(?:[├└]── |^    )(\w+)", errors.__doc__ or "", re.MULTILINE))
    assert classes <= drawn, f"not drawn in errors.py's tree: {sorted(classes - drawn)}"
