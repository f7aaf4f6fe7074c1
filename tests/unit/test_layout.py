"""The README's layout tables and the package docstring name what the tree holds, so a newcomer's map stays true."""

import re
import subprocess
from pathlib import Path

import claimcheck

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "apps" / "claimcheck"


def readme_layout() -> str:
    text = (REPO / "README.md").read_text()
    return text[text.index("## Repository layout"):]


def package_parts() -> list[str]:
    """The package's modules and subpackages (``migrations/``, ``localstack/``), as the tables write them."""
    modules = [path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__"]
    packages = [f"{path.name}/" for path in PACKAGE.iterdir() if (path / "__init__.py").exists()]
    return sorted(modules + packages)


def test_every_module_and_subpackage_is_in_the_readme_layout() -> None:
    layout = readme_layout()
    assert [part for part in package_parts() if f"`{part}`" not in layout] == []


def test_the_package_docstring_names_every_module_and_subpackage() -> None:
    doc = claimcheck.__doc__ or ""
    assert [part for part in package_parts() if not re.search(rf"\b{re.escape(part)}", doc)] == []


def test_every_top_level_directory_is_in_the_readme_layout() -> None:
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=REPO, check=True).stdout.split()
    directories = {name.split("/")[0] for name in tracked if "/" in name} - {"apps"}
    layout = readme_layout()
    assert sorted(name for name in directories if f"`{name}/`" not in layout) == []
    assert "`apps/claimcheck/`" in layout
