"""The page's script on its own: its reducer and words (tests/js/, run by Node's own test runner), so that the suite
covers them. Outside CI these tests skip when `node` is missing (`apt-get install nodejs`); in CI (`CI=true`) they
fail."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

JS_TESTS = Path(__file__).resolve().parent / "js"
IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def test_the_page_script_passes_its_node_tests():
    node = shutil.which("node")
    if node is None:
        if IN_CI:
            pytest.fail("node is missing: .ci/run installs Debian's nodejs")
        pytest.skip("node is missing: apt-get install nodejs")
    files = sorted(str(path) for path in JS_TESTS.glob("*.test.mjs"))
    assert files, "no tests in tests/js/"
    ran = subprocess.run([node, "--test", *files], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-2000:]
    assert "# fail 0" in ran.stdout and "# pass 0" not in ran.stdout
