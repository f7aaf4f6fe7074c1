"""The application image: what images/Dockerfile builds, checked against what the charts run in it
without Docker; built and run where a Docker engine is usable (else those tests are skipped)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .conftest import APP, APP_TEST_VALUES, ROOT, containers, one, pod_specs, render
from .dockerfile import Stage, stages

DOCKERFILE = ROOT / "images" / "Dockerfile"
LOCK = ROOT / "images" / "requirements.lock"
PYPROJECT = ROOT / "pyproject.toml"
TAG = "claimcheck:chart-test"


# -- what the Dockerfile builds, read without Docker -------------------------------------------
# The builder's view of images/Dockerfile (tests/charts/dockerfile.py): each property below is
# one that a build and run would show, checked against what the charts run in the image.


@pytest.fixture(scope="module")
def build_stages() -> list[Stage]:
    return stages(DOCKERFILE)


@pytest.fixture(scope="module")
def runtime(build_stages: list[Stage]) -> Stage:
    """The stage the image is: the last one."""
    return build_stages[-1]


def app_containers() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(where, pod spec, container) of every container the application chart runs in the claimcheck image."""
    docs = render(APP, APP_TEST_VALUES)
    image = one(docs, "Deployment", "claimcheck-coordinator")["spec"]["template"]["spec"]["containers"][0]["image"]
    found = [(where, spec, c) for where, spec in pod_specs(docs) for c in containers(spec) if c["image"] == image]
    assert len(found) >= 3, found
    return found


def test_every_stage_starts_from_the_same_official_slim_python(build_stages: list[Stage]) -> None:
    """The venv built in one stage runs in the other: the same interpreter at the same path."""
    assert len(build_stages) >= 2, "multi-stage: the build tools stay out of the image"
    bases = {stage.base for stage in build_stages}
    assert len(bases) == 1, f"stages start from different images: {bases}"
    repository, _, tag = bases.pop().partition(":")
    assert repository in ("python", "docker.io/library/python"), repository
    minimum = re.search(r">=\s*(\d+\.\d+)", tomllib.loads(PYPROJECT.read_text())["project"]["requires-python"])
    assert minimum and tag.startswith(f"{minimum[1]}-slim"), f"python:{tag}, the project needs Python {minimum and minimum[1]}"


def test_the_image_stage_installs_nothing_and_takes_only_the_built_venv(runtime: Stage) -> None:
    installers = [words for words in runtime.commands()
                  if "install" in words and ({"pip", "apt-get", "apt", "apk"} & {Path(w).name for w in words})]
    assert not installers, f"installs in the final stage: {installers}"
    copies = runtime.all("COPY") + runtime.all("ADD")
    assert copies and all(c.flags().get("from") for c in copies), "the final stage copies only from the build stage"
    # A venv's scripts carry absolute shebangs: it must land where it was built, first on PATH.
    for copy in copies:
        source, destination = copy.operands()
        assert source == destination, f"{copy.arguments}: a venv does not work moved"
    path = next(i for i in runtime.all("ENV") if i.arguments.startswith("PATH="))
    assert path.arguments.startswith(f"PATH={copies[0].operands()[1]}/bin:"), path.arguments


def test_dependencies_come_only_from_the_hashed_lock(build_stages: list[Stage]) -> None:
    """With --no-deps, what the lock does not pin is missing from the image: every runtime
    dependency of the project (and the operator extra) is pinned, with hashes, as a wheel."""
    installs = [words for stage in build_stages for words in stage.commands()
                if "install" in words and "pip" in Path(words[0]).name]
    assert installs, "no pip install in the build"
    for words in installs:
        assert "--no-deps" in words, f"{words}: dependencies outside the lock"
    from_lock = [words for words in installs if "-r" in words]
    assert from_lock and all({"--require-hashes", "--only-binary=:all:"} <= set(words) for words in from_lock)
    pinned: dict[str, str] = {}
    for block in LOCK.read_text().split("\n"):
        if block and not block.startswith((" ", "#")):
            name, _, rest = block.partition("==")
            pinned[canonicalize_name(name)] = rest.split()[0]
    assert all("--hash=sha256:" in block for block in LOCK.read_text().split("==")[1:]), "a pin without hashes"
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    for requirement in map(Requirement, project["dependencies"] + project["optional-dependencies"]["operator"]):
        version = pinned.get(canonicalize_name(requirement.name))
        assert version is not None, f"{requirement.name} is not in {LOCK.name}"
        assert requirement.specifier.contains(version, prereleases=True), f"{requirement}: the lock pins {version}"


def test_the_commands_the_charts_run_are_installed_in_the_image(build_stages: list[Stage]) -> None:
    scripts = set(tomllib.loads(PYPROJECT.read_text())["project"]["scripts"])
    copied = {operand for stage in build_stages for copy in stage.all("COPY") for operand in copy.operands()[:-1]}
    assert {"pyproject.toml", "apps", "operator"} <= copied, "the image installs the project's own packages"
    for where, _, container in app_containers():
        assert container["command"][0] in scripts, f"{where}/{container['name']} runs {container['command'][0]!r}"


def test_the_image_runs_as_the_non_root_user_the_pods_require(runtime: Stage) -> None:
    user = runtime.last("USER")
    assert user is not None, "the image would run as root"
    uid, _, gid = user.arguments.partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) != 0, (
        f"USER {user.arguments}: Kubernetes verifies runAsNonRoot only for a numeric, non-zero uid")
    for where, spec, container in app_containers():
        context = spec.get("securityContext", {}) | container.get("securityContext", {})
        assert context.get("runAsNonRoot") is True, where
        assert (context.get("runAsUser"), context.get("runAsGroup")) == (int(uid), int(gid)), f"{where}/{container['name']}"


def test_the_image_declares_the_ports_the_pods_serve(runtime: Stage) -> None:
    exposed = {int(port.split("/")[0]) for expose in runtime.all("EXPOSE") for port in expose.operands()}
    served = {port["containerPort"] for _, _, container in app_containers() for port in container.get("ports", [])}
    assert served and served <= exposed, f"served {sorted(served)}, exposed {sorted(exposed)}"


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
