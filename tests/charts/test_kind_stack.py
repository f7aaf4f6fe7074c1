"""`make kind-up`, the e2e fixtures and the workflow share one code path and one set of pins.

No cluster is needed: these read the scripts, the workflow and kind-config.yaml.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
kind_stack: Any = importlib.import_module("kind_stack")  # scripts/ is not a package: loaded by path


def test_make_kind_up_and_down_run_the_shared_module() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^kind-up: install .*\n\t@bash scripts/kind-up.sh$", makefile, re.M)
    assert re.search(r"^kind-down: install .*\n\t@bash scripts/kind-down.sh$", makefile, re.M)
    assert 'scripts/kind_stack.py up' in (ROOT / "scripts" / "kind-up.sh").read_text()
    assert 'scripts/kind_stack.py down' in (ROOT / "scripts" / "kind-down.sh").read_text()
    conftest = (ROOT / "tests" / "e2e" / "conftest.py").read_text()
    assert 'import_module("kind_stack")' in conftest and "stack().up()" in conftest
    source = (ROOT / "scripts" / "kind_stack.py").read_text()
    assert "from pytest_kind import KindCluster" in source
    assert "subprocess.run([\"kind\"" not in source, "kind is driven through KindCluster"


def test_settings_defaults_and_environment() -> None:
    default = kind_stack.Settings.from_env({})
    assert (default.cluster, default.namespace, default.context) == ("claimcheck", "claimcheck", "kind-claimcheck")
    assert default.image == f"claimcheck:{kind_stack.app_version()}"
    assert re.fullmatch(r"kindest/node:v1\.\d+\.\d+@sha256:[0-9a-f]{64}", default.node_image)
    custom = kind_stack.Settings.from_env({"KIND_CLUSTER_NAME": "x", "CLAIMCHECK_IMAGE_TAG": "dev", "SKIP_BUILD": "1"})
    assert (custom.context, custom.image, custom.skip_build) == ("kind-x", "claimcheck:dev", True)


def test_workflow_pins_kind_and_the_node_image_of_the_module() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "e2e-kind.yml").read_text())
    env = workflow["jobs"]["e2e"]["env"]
    assert re.fullmatch(r"v\d+\.\d+\.\d+", env["KIND_VERSION"])
    assert env["KIND_NODE_IMAGE"] == kind_stack.NODE_IMAGE
    assert env["CLAIMCHECK_E2E"] == "1"
    steps = " ".join(str(s.get("run", "")) for s in workflow["jobs"]["e2e"]["steps"])
    assert "pytest tests/e2e" in steps and "tests/charts" in steps and "tests/operator" in steps


def test_kind_config_publishes_every_node_port_the_values_use() -> None:
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    published = {m["containerPort"] for n in config["nodes"] for m in n.get("extraPortMappings", [])}
    values = (ROOT / "scripts" / "kind-infra-values.yaml").read_text() + (ROOT / "scripts" / "kind-app-values.yaml").read_text()
    node_ports = {int(p) for p in re.findall(r"[nN]odePort: (\d+)", values)}
    assert node_ports and node_ports <= published, node_ports - published


def test_pointer_keys_come_from_the_cli_output_as_chart_values() -> None:
    output = ("CLAIMCHECK_POINTER_SIGNING_KEY=k1:penEVVQvatAcS_KVJeMWWFGYWCiCf5NEV_dJ44WLmLY=\n"
              "CLAIMCHECK_POINTER_VERIFY_KEYS=k1:BfEYxu7LNnMVQiK6NOI0nqA-S9MPMaVvB_maRlJew6o=\n")
    values = yaml.safe_load(kind_stack.pointer_keys_yaml(output))
    assert values == {"signing": {"pointerSigningKey": "k1:penEVVQvatAcS_KVJeMWWFGYWCiCf5NEV_dJ44WLmLY=",
                                  "pointerVerifyKeys": "k1:BfEYxu7LNnMVQiK6NOI0nqA-S9MPMaVvB_maRlJew6o="}}
    import pytest

    with pytest.raises(ValueError, match="CLAIMCHECK_POINTER_VERIFY_KEYS"):
        kind_stack.pointer_keys_yaml(output.splitlines()[0])


def test_kind_up_passes_pointer_keys_only_on_the_first_install() -> None:
    """Later runs rely on the chart keeping the installed keys (lookup): new keys would make the
    running consumers and coordinators refuse the producer's pointers."""
    calls: list[tuple[str, ...]] = []

    class Probe:
        def __init__(self, installed: bool) -> None:
            self.installed = installed
            self.settings = kind_stack.Settings.from_env({"KIND_CLUSTER_NAME": "keys-test"})

        def kubectl(self, *args: str, check: bool = True) -> Any:
            calls.append(args)
            return kind_stack.Result(0 if self.installed else 1, "", "")

    (kind_stack.TOOLS / "kind" / "keys-test").mkdir(parents=True, exist_ok=True)
    with kind_stack.Stack.pointer_keys_values(Probe(installed=True)) as args:
        assert args == []
    assert calls[-1][:3] == ("get", "secret", "claimcheck-producer")
    original = kind_stack.generate_pointer_keys
    kind_stack.generate_pointer_keys = lambda: ("CLAIMCHECK_POINTER_SIGNING_KEY=k1:" + "A" * 43 + "=\n"
                                                "CLAIMCHECK_POINTER_VERIFY_KEYS=k1:" + "B" * 43 + "=\n")
    try:
        with kind_stack.Stack.pointer_keys_values(Probe(installed=False)) as args:
            assert args[0] == "-f"
            path = Path(args[1])
            assert oct(path.stat().st_mode & 0o777) == "0o600"
            assert yaml.safe_load(path.read_text())["signing"]["pointerVerifyKeys"] == "k1:" + "B" * 43 + "="
        assert not path.exists()
    finally:
        kind_stack.generate_pointer_keys = original
        (kind_stack.TOOLS / "kind" / "keys-test").rmdir()
