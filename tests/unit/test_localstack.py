"""The local stack's ports and configuration files, without starting anything: one definition of
every port, a second stack that cannot collide with the first, and configs the daemons accept."""

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from claimcheck.config import Settings
from claimcheck.localstack import accounts
from claimcheck.localstack.ports import LOCAL, NODES, OFFSET_VARIABLE, SPARE_PORTS, Ports, free_port
from claimcheck.localstack.services import LocalStack

SECOND = 100  # the offset the ports module recommends for a second stack
PLACEHOLDER = re.compile(r"@[A-Z0-9_]+@")


def test_every_port_of_a_stack_is_distinct() -> None:
    first = Ports()
    ports = first.listening() + [first.coordinator, *range(first.first_cli_distribution, first.first_cli_distribution + 10)]
    assert len(ports) == len(set(ports)), sorted(port for port in ports if ports.count(port) > 1)


def test_a_second_stack_moves_every_port_and_collides_with_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OFFSET_VARIABLE, str(SECOND))
    moved = Ports.from_env()
    first = Ports()
    for field in dataclasses.fields(Ports):
        assert getattr(moved, field.name) == getattr(first, field.name) + SECOND, field.name
    assert not set(moved.listening()) & set(first.listening())
    assert LocalStack(Path("/nonexistent"), moved).node(1).node_name != LocalStack(Path("/nonexistent"), first).node(1).node_name


def test_spare_ports_are_outside_the_ephemeral_range_and_the_stacks_and_never_handed_out_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An outgoing connection cannot take a spare port as its local port, nor a stack's service."""
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert SPARE_PORTS.stop <= ephemeral_low
    monkeypatch.setenv(OFFSET_VARIABLE, "100")
    for stack in (Ports(), Ports.from_env(), LOCAL):
        assert not set(stack.listening()).intersection(SPARE_PORTS)
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50 and all(port in SPARE_PORTS for port in ports)


def test_the_settings_default_to_the_stacks_ports_and_accounts() -> None:
    defaults = {name: field.default for name, field in Settings.model_fields.items()}
    settings, ports = Settings.model_construct(**defaults), Ports.from_env()
    assert f":{ports.amqp}/" in settings.amqp_url
    assert settings.s3_endpoint_url.endswith(f":{ports.s3}")
    assert settings.database_url == LocalStack(Path("/nonexistent"), ports).database_url(accounts.DATABASE_OWNER)
    assert settings.http_port == ports.coordinator and settings.coordinator_url.endswith(f":{ports.coordinator}")
    assert settings.management_url.endswith(f":{ports.management}")
    assert (settings.s3_access_key_id, settings.s3_bucket) == (accounts.ADMIN_S3.user, accounts.BUCKET)


@pytest.fixture
def stack(tmp_path: Path) -> LocalStack:
    return LocalStack(tmp_path, dataclasses.replace(Ports(), amqp=40672, first_node_amqp=40680, prometheus=40090))


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is installed by `make up`")
def test_haproxy_config_routes_to_every_node_of_its_stack(stack: LocalStack) -> None:
    config = stack.haproxy.write_config().read_text()  # `haproxy -c` accepted it, or StackError
    assert not PLACEHOLDER.search(config)
    assert "bind 127.0.0.1:40672" in config
    assert all(f"server rmq-{n} 127.0.0.1:{40680 + n} check" in config for n in NODES)


def test_prometheus_scrapes_every_node_labelled_by_name(stack: LocalStack) -> None:
    config = yaml.safe_load(stack.prometheus.write_config().read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name in ("rabbitmq", "rabbitmq-queues"):
        targets = {group["targets"][0]: group["labels"]["node"] for group in jobs[name]["static_configs"]}
        assert targets == {f"127.0.0.1:{stack.ports.node_metrics(n)}": f"rmq-{n}" for n in NODES}
    assert jobs["prometheus"]["static_configs"][0]["targets"] == ["127.0.0.1:40090"]
    if shutil.which("promtool"):
        check = subprocess.run(["promtool", "check", "config", str(stack.directory / "prometheus" / "prometheus.yml")],
                               capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr


def test_each_node_config_has_its_own_ports(stack: LocalStack) -> None:
    for node in stack.nodes:
        node.prepare()
        conf = (node.directory / "rabbitmq.conf").read_text()
        assert f"listeners.tcp.default = 127.0.0.1:{stack.ports.node_amqp(node.n)}" in conf
        assert f"management.tcp.port = {stack.ports.node_management(node.n)}" in conf
        assert not PLACEHOLDER.search(conf)
    cookie = stack.rabbitmq / "home" / ".erlang.cookie"
    assert len(cookie.read_text()) == 20 and cookie.stat().st_mode & 0o777 == 0o400
