"""The real entry points: ``python -m sqlgate`` and the ``sqlgate`` script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_python_m_sqlgate_stress() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sqlgate", "stress", "--requests", "200"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "requests: 200 (200 ok, 0 failed, 0.00 %)" in proc.stdout
    assert "leak check PASS" in proc.stdout


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("sqlgate")
    assert script.exists(), f"{script} missing: pip install -e . (project.scripts)"
    proc = subprocess.run(
        [str(script), "stress", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage: sqlgate stress" in proc.stdout
