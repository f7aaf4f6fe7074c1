"""What an unchanged `helm upgrade` and a pod's shutdown do, on the rendered objects.

- RabbitMQ's preStop commands, each with its own timeout, together end before
  terminationGracePeriodSeconds, leaving the broker time to stop.
- checksum/env is computed from the same Secret the render emits, and two renders against
  an API server holding the first install give equal checksums: nothing restarts.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import APP, HELM, INFRA, NAMESPACE, ROOT, SCENARIOS, helm, one, render, scenario_id
from .fakekube import FakeKube

SHUTDOWN_MARGIN = 30  # seconds the broker keeps for itself after the hook (the chart's rule)
INFRA_SETS = [s for s in SCENARIOS if s[0] == INFRA] + [(INFRA, ROOT / "scripts" / "kind-infra-values.yaml")]


def prestop_timeouts(docs: list[dict]) -> tuple[list[int], int]:
    sts = next(d for d in docs if d["kind"] == "StatefulSet"
               and d["spec"]["template"]["spec"]["containers"][0]["name"] == "rabbitmq")
    spec = sts["spec"]["template"]["spec"]
    command = " ".join(spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"])
    steps = re.findall(r"rabbitmq-upgrade (\S+) -t (\d+)", command)
    assert [name for name, _ in steps] == ["await_online_quorum_plus_one", "drain"], command
    return [int(seconds) for _, seconds in steps], int(spec["terminationGracePeriodSeconds"])


@pytest.mark.parametrize("scenario", INFRA_SETS, ids=scenario_id)
def test_prestop_commands_fit_the_grace_period_together(scenario: tuple[Path, Path | None]) -> None:
    timeouts, grace = prestop_timeouts(render(*scenario))
    assert all(t > 0 for t in timeouts), timeouts
    assert sum(timeouts) + SHUTDOWN_MARGIN <= grace, f"preStop {timeouts} (sum {sum(timeouts)}) vs grace {grace}"


@pytest.mark.parametrize("grace, budget", [(120, 60), (61, 31), (3600, 3000)])
def test_prestop_budget_is_split_not_repeated(grace: int, budget: int) -> None:
    docs = render(INFRA, sets=(f"rabbitmq.terminationGracePeriodSeconds={grace}", f"rabbitmq.preStopTimeoutSeconds={budget}"))
    timeouts, rendered_grace = prestop_timeouts(docs)
    assert rendered_grace == grace
    assert sum(timeouts) == budget
    assert timeouts[0] >= timeouts[1], "the quorum wait gets the larger share"


@pytest.mark.parametrize("grace, budget", [(600, 600), (600, 580), (300, 540)])
def test_a_budget_that_does_not_fit_fails_the_render(grace: int, budget: int) -> None:
    result = helm("template", "x", str(INFRA), "--set", f"rabbitmq.terminationGracePeriodSeconds={grace}",
                  "--set", f"rabbitmq.preStopTimeoutSeconds={budget}", check=False)
    assert result.returncode != 0
    assert "preStopTimeoutSeconds" in result.stderr and "terminationGracePeriodSeconds" in result.stderr


# --- checksum/env ---------------------------------------------------------------------------

def _template(fake: FakeKube, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    kubeconfig = fake.kubeconfig(tmp_path / "kubeconfig.json")
    return subprocess.run([str(HELM), "template", "claimcheck", str(APP), "--namespace", NAMESPACE,
                           "--dry-run=server", "--kubeconfig", str(kubeconfig), *args],
                          capture_output=True, text=True, timeout=120)


def _checksums(docs: list[dict]) -> dict[str, str]:
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    return {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"]["checksum/env"]
            for d in deployments if "checksum/env" in d["spec"]["template"]["metadata"].get("annotations", {})}


def _env_secret_text(stdout: str) -> str:
    """The env Secret exactly as the template rendered it (what `include | sha256sum` hashes)."""
    marker = "# Source: claimcheck/templates/env-secret.yaml\n"
    return stdout.split(marker, 1)[1].split("\n---\n", 1)[0]


def test_checksum_env_is_the_hash_of_the_rendered_secret() -> None:
    """Without memoising, each include drew its own random HMAC key: the Secret the render
    emitted and the checksum of the pods described two different Secrets."""
    result = helm("template", "claimcheck", str(APP), "--namespace", NAMESPACE)
    text = _env_secret_text(result.stdout)
    assert "CLAIMCHECK_HMAC_KEYS" in text
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    checksums = _checksums(docs)
    assert set(checksums) == {"claimcheck-coordinator", "claimcheck-operator"}
    # helm separates documents with "\n---\n", taking the template's final newline with it.
    assert set(checksums.values()) == {hashlib.sha256((text + "\n").encode()).hexdigest()}


def test_two_renders_against_the_installed_release_give_equal_checksums(tmp_path: Path) -> None:
    """Install, then an unchanged upgrade: the same env Secret, the same checksum/env, so
    `helm upgrade` with nothing changed restarts neither the coordinators nor the operator."""
    infra = render(INFRA, fresh=True)
    with FakeKube() as fake:
        fake.add("secrets", one(infra, "Secret", "claimcheck-infra-connection"))
        fake.add("serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount",
                                     "metadata": {"name": "default", "namespace": NAMESPACE}})
        first = _template(fake, tmp_path)
        assert first.returncode == 0, first.stderr
        installed = [d for d in yaml.safe_load_all(first.stdout) if d]
        fake.add("secrets", one(installed, "Secret", "claimcheck-env"))  # what the install stored
        second = _template(fake, tmp_path)
        assert second.returncode == 0, second.stderr
        third = _template(fake, tmp_path)
        assert any("/secrets/claimcheck-env" in r for r in fake.requests), "lookup of the env Secret was not used"
    upgraded = [d for d in yaml.safe_load_all(second.stdout) if d]
    again = [d for d in yaml.safe_load_all(third.stdout) if d]
    assert _checksums(installed) and _checksums(installed) == _checksums(upgraded) == _checksums(again)
    assert one(installed, "Secret", "claimcheck-env")["data"] == one(upgraded, "Secret", "claimcheck-env")["data"]
    for name in ("claimcheck-coordinator", "claimcheck-operator"):
        assert one(installed, "Deployment", name)["spec"]["template"] == one(upgraded, "Deployment", name)["spec"]["template"]


def test_a_changed_setting_still_rolls_the_pods(tmp_path: Path) -> None:
    """The other side: with the Secret installed, a changed value changes checksum/env."""
    infra = render(INFRA, fresh=True)
    with FakeKube() as fake:
        fake.add("secrets", one(infra, "Secret", "claimcheck-infra-connection"))
        first = _template(fake, tmp_path)
        fake.add("secrets", one([d for d in yaml.safe_load_all(first.stdout) if d], "Secret", "claimcheck-env"))
        changed = _template(fake, tmp_path, "--set", "config.logLevel=DEBUG")
    assert first.returncode == 0 and changed.returncode == 0, first.stderr + changed.stderr
    before = _checksums([d for d in yaml.safe_load_all(first.stdout) if d])
    after = _checksums([d for d in yaml.safe_load_all(changed.stdout) if d])
    assert before.keys() == after.keys() and all(before[k] != after[k] for k in before)
