"""mypy --strict passes on the examples (which use only the public API) and on the library's modules."""

import subprocess
import sys
from pathlib import Path

import claimcheck

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(claimcheck.__file__).parent
# The library's own modules: what an application imports and what runs inside it.
LIBRARY_MODULES = ("__init__", "producer", "consumer", "sources", "store", "protocol", "deletion", "files", "payload")


def test_the_examples_and_the_library_modules_pass_mypy_strict() -> None:
    targets = ["examples", *(str(PACKAGE / f"{name}.py") for name in LIBRARY_MODULES)]
    result = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", *targets],
                            capture_output=True, text=True, cwd=ROOT, timeout=600,
                            env={"MYPYPATH": str(PACKAGE.parent), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout + result.stderr
