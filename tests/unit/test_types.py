"""Types are checked like behaviour: any finding of ``mypy --strict`` (configured in pyproject's [tool.mypy]) fails."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_mypy_strict_finds_nothing() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary"],
                            capture_output=True, text=True, cwd=REPO, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
