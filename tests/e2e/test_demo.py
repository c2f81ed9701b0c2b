"""The demo, run as a user would run it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DEMO_SECONDS = 120


def test_demo_passes_and_prints_no_token(tmp_path: Path) -> None:
    """`python -m authz.demo` exits 0 and prints no part of any token."""
    done = subprocess.run(
        [sys.executable, "-m", "authz.demo", "--work", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=DEMO_SECONDS,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "demo ok: 3/3" in done.stdout
    assert re.search(r"authorization: Bearer <\d+-byte token>", done.stdout)
    assert "eyJ" not in done.stdout + done.stderr
