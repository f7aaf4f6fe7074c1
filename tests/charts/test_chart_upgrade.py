"""What an unchanged `helm upgrade` and a pod's shutdown do, on the rendered objects.

- RabbitMQ's preStop commands, each with its own timeout, together end before
  terminationGracePeriodSeconds, leaving the broker time to stop.
- checksum/secret is computed from the same role Secret the render emits, and two renders against
  an API server holding the first install give equal checksums: nothing restarts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import APP, APP_TEST_VALUES, HELM, INFRA, NAMESPACE, ROOT, SCENARIOS, helm, one, render, scenario_id
from .fakekube import FakeKube

SHUTDOWN_MARGIN = 30  # seconds the broker keeps for itself after the hook (the chart's rule)
INFRA_SETS = [s for s in SCENARIOS if s[0] == INFRA] + [(INFRA, ROOT / "scripts" / "kind-infra-values.yaml")]


def prestop_timeouts(docs: list[dict[str, Any]]) -> tuple[list[int], int]:
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


# --- checksum/secret ---------------------------------------------------------------------

APP_ROLE_SECRETS = ("claimcheck-producer", "claimcheck-coordinator", "claimcheck-operator", "claimcheck-reader",
                    "claimcheck-recipient-billing", "claimcheck-recipient-audit")


def _template(fake: FakeKube, tmp_path: Path, *args: str, keys: bool = True) -> subprocess.CompletedProcess[str]:
    kubeconfig = fake.kubeconfig(tmp_path / "kubeconfig.json")
    return subprocess.run([str(HELM), "template", "claimcheck", str(APP), "--namespace", NAMESPACE,
                           "--dry-run=server", "--kubeconfig", str(kubeconfig),
                           *(["-f", str(APP_TEST_VALUES)] if keys else []), *args],
                          capture_output=True, text=True, timeout=120)


def _docs(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def _checksums(docs: list[dict[str, Any]]) -> dict[str, str]:
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    return {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"]["checksum/secret"]
            for d in deployments if "checksum/secret" in d["spec"]["template"]["metadata"].get("annotations", {})}


def _settings_hash(secret: dict[str, Any]) -> str:
    """What the chart hashes: the role's settings as JSON (Go's toJson: sorted keys, no spaces)."""
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def test_checksum_is_the_hash_of_the_rendered_role_secret() -> None:
    """Without memoising, each include drew its own random credentials: the Secret the render
    emitted and the checksum of the pods described two different Secrets."""
    docs = render(APP, fresh=True)
    checksums = _checksums(docs)
    assert checksums == {"claimcheck-coordinator": _settings_hash(one(docs, "Secret", "claimcheck-coordinator")),
                         "claimcheck-operator": _settings_hash(one(docs, "Secret", "claimcheck-operator"))}


def test_two_renders_against_the_installed_release_give_equal_checksums(tmp_path: Path) -> None:
    """Install, then an unchanged upgrade (no pointer keys in values: the installed ones are
    kept): the same Secrets, the same checksums, so `helm upgrade` restarts nothing."""
    infra = render(INFRA, fresh=True)
    with FakeKube() as fake:
        fake.add("secrets", one(infra, "Secret", "claimcheck-infra-connection"))
        fake.add("serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount",
                                     "metadata": {"name": "default", "namespace": NAMESPACE}})
        installed = _docs(_template(fake, tmp_path))
        for name in APP_ROLE_SECRETS:  # what the install stored (hooks are not kept)
            fake.add("secrets", one(installed, "Secret", name))
        upgraded = _docs(_template(fake, tmp_path, keys=False))
        again = _docs(_template(fake, tmp_path, keys=False))
        assert any("/secrets/claimcheck-coordinator" in r for r in fake.requests), "lookup of the role Secrets was not used"
    assert _checksums(installed) and _checksums(installed) == _checksums(upgraded) == _checksums(again)
    for name in APP_ROLE_SECRETS:
        assert one(installed, "Secret", name)["data"] == one(upgraded, "Secret", name)["data"], name
    for name in ("claimcheck-coordinator", "claimcheck-operator"):
        assert one(installed, "Deployment", name)["spec"]["template"] == one(upgraded, "Deployment", name)["spec"]["template"]


def test_a_changed_setting_still_rolls_the_pods(tmp_path: Path) -> None:
    """The other side: with the Secrets installed, a rotated control token rolls both the
    coordinator (accepts it) and the operator (sends it)."""
    infra = render(INFRA, fresh=True)
    with FakeKube() as fake:
        fake.add("secrets", one(infra, "Secret", "claimcheck-infra-connection"))
        first = _docs(_template(fake, tmp_path))
        for name in APP_ROLE_SECRETS:
            fake.add("secrets", one(first, "Secret", name))
        changed = _docs(_template(fake, tmp_path, "--set", "credentials.controlTokens=rotated-token-0123456789abcdef"))
    before, after = _checksums(first), _checksums(changed)
    assert before.keys() == after.keys() and all(before[k] != after[k] for k in before)
