"""The package type-checks: mypy, configured in pyproject.toml, reports no errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_reports_no_errors() -> None:
    # run from the repository root so mypy reads [tool.mypy] from pyproject.toml;
    # the default .mypy_cache there (gitignored) keeps reruns fast
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "ocean_hook"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"mypy found problems:\n{result.stdout}{result.stderr}"
