"""The application image: built and run where a Docker engine is usable, else skipped."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from .conftest import ROOT

DOCKERFILE = ROOT / "images" / "Dockerfile"
TAG = "claimcheck:chart-test"


def test_dockerfile_follows_the_image_rules() -> None:
    """Static checks that hold without Docker: slim official base, lock with hashes, non-root."""
    text = DOCKERFILE.read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert text.count("FROM ${PYTHON_IMAGE}") == 2, "multi-stage: build and runtime"
    runtime = text.split("AS runtime", 1)[1]
    assert "pip install" not in runtime and "apt-get" not in runtime, "no installs in the final stage"
    assert "USER 10001:10001" in runtime
    assert "--require-hashes" in text
    lock = (ROOT / "images" / "requirements.lock").read_text()
    pinned = [line for line in lock.splitlines() if line and not line.startswith((" ", "#"))]
    assert pinned and all("==" in line for line in pinned)
    assert all("--hash=sha256:" in block for block in lock.split("==")[1:])


def _docker_usable() -> str | None:
    if not shutil.which("docker"):
        return "docker CLI is not installed"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        why = info.stderr.strip().splitlines()[-1] if info.stderr.strip() else info.returncode
        return f"no usable Docker engine (`docker info` failed: {why})"
    return None


@pytest.fixture(scope="module")
def image() -> str:
    reason = _docker_usable()
    if reason:
        pytest.skip(f"image build skipped: {reason}")
    build = subprocess.run(["docker", "build", "-f", str(DOCKERFILE), "-t", TAG, str(ROOT)],
                           capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stderr[-4000:]
    return TAG


@pytest.mark.parametrize("command", [["claimcheck", "--help"], ["claimcheck", "coordinator", "--help"],
                                     ["claimcheck-operator", "--help"]])
def test_entrypoints_run_in_the_image(image: str, command: list[str]) -> None:
    result = subprocess.run(["docker", "run", "--rm", "--network", "none", image, *command],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout or "usage" in result.stdout


def test_image_runs_as_non_root(image: str) -> None:
    result = subprocess.run(["docker", "run", "--rm", "--network", "none", image, "id", "-u"],
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "10001"


def test_image_has_no_build_tools(image: str) -> None:
    result = subprocess.run(["docker", "run", "--rm", "--network", "none", image, "sh", "-c",
                             "command -v gcc cc make pip || true"], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == ""
