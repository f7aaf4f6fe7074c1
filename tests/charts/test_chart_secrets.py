"""Credentials: generated, never fixed in the chart, kept across upgrades (lookup)."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from claimcheck.config import Settings

from .conftest import APP, APP_TEST_VALUES, HELM, INFRA, NAMESPACE, find, helm, one, render
from .fakekube import FakeKube

DEFAULT_SERVICE_ACCOUNT = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": NAMESPACE}}
CREDENTIALS = {  # Secret name -> keys holding generated material
    "rmq-default-user": ["password"],
    "rmq-erlang-cookie": [".erlang.cookie"],
    "claimcheck-infra-minio": ["rootUser", "rootPassword", "producerSecretKey", "consumerSecretKey", "coordinatorSecretKey"],
    "claimcheck-infra-postgresql": ["POSTGRES_PASSWORD", "READER_PASSWORD"],
}
WEAK = {"guest", "admin", "password", "secret", "changeme", "minioadmin", "postgres", "claimcheck",
        "claimcheck-secret", "rabbitmq"}


def decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()} | dict(secret.get("stringData", {}))


def credentials(docs: list[dict[str, Any]]) -> dict[str, str]:
    out = {}
    for name, keys in CREDENTIALS.items():
        data = decoded(one(docs, "Secret", name))
        for key in keys:
            out[f"{name}/{key}"] = data[key]
    return out


def test_generated_credentials_are_random_per_render() -> None:
    first, second = credentials(render(INFRA, fresh=True)), credentials(render(INFRA, fresh=True))
    for key in first:
        assert first[key] != second[key], f"{key} is the same in two renders: a fixed default"
        assert len(first[key]) >= 16 and first[key].isalnum(), key


def test_no_fixed_passwords_in_the_charts() -> None:
    values_text = (INFRA / "values.yaml").read_text() + (APP / "values.yaml").read_text()
    for key, value in credentials(render(INFRA)).items():
        assert value.lower() not in WEAK, key
        assert value not in values_text, key
    for secret in find(render(INFRA), "Secret") + find(render(APP), "Secret"):
        for key, value in decoded(secret).items():
            for userinfo in re.findall(r"://([^@/]+)@", value):
                user, _, password = userinfo.partition(":")
                assert password.lower() not in WEAK | {""}, f"{secret['metadata']['name']}/{key}"
                assert password not in values_text, f"{secret['metadata']['name']}/{key}"


def test_app_chart_offline_renders_no_infra_credentials() -> None:
    """Without the infra Secret (helm template), no S3, database or admin credential is invented."""
    docs = render(APP)
    for d in find(docs, "Secret"):
        env = decoded(d)
        assert env.get("CLAIMCHECK_S3_SECRET_ACCESS_KEY", "") == "", d["metadata"]["name"]
        assert "@" not in env.get("CLAIMCHECK_DATABASE_URL", "")
    provision = decoded(one(docs, "Secret", "claimcheck-provision"))
    assert "@" not in provision["CLAIMCHECK_AMQP_URL"] and "@" not in provision["CLAIMCHECK_MANAGEMENT_URL"]


def test_templates_use_lookup_before_values_before_random() -> None:
    helpers = (INFRA / "templates" / "_helpers.tpl").read_text()
    body = helpers.split('define "claimcheck-infra.credential"', 1)[1].split("{{- end }}\n\n", 1)[0]
    assert 'lookup "v1" "Secret"' in body
    order = [body.index("lookup"), body.index("else if .value"), body.index("randAlphaNum")]
    assert order == sorted(order)
    # Nothing else generates random material.
    templates = "".join(p.read_text() for p in (INFRA / "templates").rglob("*.yaml"))
    assert "randAlphaNum" not in templates and "randAscii" not in templates and "uuidv4" not in templates


def test_connection_secret_matches_the_component_secrets() -> None:
    docs = render(INFRA, fresh=True)
    creds = credentials(docs)
    conn = decoded(one(docs, "Secret", "claimcheck-infra-connection"))
    admin = urlsplit(conn["CLAIMCHECK_AMQP_ADMIN_URL"])
    assert (admin.username, admin.password) == ("claimcheck", creds["rmq-default-user/password"])
    assert admin.hostname == f"claimcheck-infra-haproxy.{NAMESPACE}.svc.cluster.local" and admin.port == 5672
    management = urlsplit(conn["CLAIMCHECK_MANAGEMENT_URL"])
    assert (management.scheme, management.port, management.password) == ("http", 15672, creds["rmq-default-user/password"])
    endpoint = urlsplit(conn["CLAIMCHECK_AMQP_ENDPOINT"])
    assert endpoint.username is None and endpoint.hostname == admin.hostname and endpoint.path == "/%2F"
    db = urlsplit(conn["CLAIMCHECK_DATABASE_URL"])
    assert (db.username, db.password) == ("claimcheck", creds["claimcheck-infra-postgresql/POSTGRES_PASSWORD"])
    reader = urlsplit(conn["CLAIMCHECK_DATABASE_READER_URL"])
    assert (reader.username, reader.password) == ("claimcheck_reader", creds["claimcheck-infra-postgresql/READER_PASSWORD"])
    assert (reader.hostname, reader.path) == (db.hostname, db.path)
    for role in ("producer", "consumer", "coordinator"):
        assert conn[f"CLAIMCHECK_S3_{role.upper()}_ACCESS_KEY_ID"] == f"claimcheck-{role}"
        assert conn[f"CLAIMCHECK_S3_{role.upper()}_SECRET_ACCESS_KEY"] == creds[f"claimcheck-infra-minio/{role}SecretKey"]
    assert len({conn[f"CLAIMCHECK_S3_{r}_SECRET_ACCESS_KEY"] for r in ("PRODUCER", "CONSUMER", "COORDINATOR")}) == 3
    default_user = decoded(one(docs, "Secret", "rmq-default-user"))["default_user.conf"]
    assert f"default_pass = {creds['rmq-default-user/password']}" in default_user


def test_credential_secrets_survive_uninstall() -> None:
    for name in CREDENTIALS:
        assert one(render(INFRA), "Secret", name)["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def _template_against(fake: FakeKube, tmp_path: Path, chart: Path, release: str, *args: str) -> subprocess.CompletedProcess[str]:
    kubeconfig = fake.kubeconfig(tmp_path / "kubeconfig.json")
    keys = ["-f", str(APP_TEST_VALUES)] if chart == APP and "--no-test-keys" not in args else []
    args = tuple(a for a in args if a != "--no-test-keys")
    return subprocess.run([str(HELM), "template", release, str(chart), "--namespace", NAMESPACE, "--include-crds",
                           "--dry-run=server", "--kubeconfig", str(kubeconfig), *keys, *args],
                          capture_output=True, text=True, timeout=120)


def _docs(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_upgrade_keeps_existing_credentials_and_does_not_roll(tmp_path: Path) -> None:
    """Render against an API holding the first install's Secrets: nothing is regenerated,
    not even when values now name other passwords, and no pod template changes."""
    installed = render(INFRA, fresh=True)
    with FakeKube() as fake:
        for secret in find(installed, "Secret"):
            fake.add("secrets", secret)
        upgraded = _docs(_template_against(
            fake, tmp_path, INFRA, "claimcheck-infra",
            "--set", "rabbitmq.auth.password=new-password", "--set", "postgresql.auth.password=new-password"))
        assert any("/secrets/rmq-default-user" in r for r in fake.requests), "lookup was not used"
    assert credentials(upgraded) == credentials(installed)
    assert decoded(one(upgraded, "Secret", "claimcheck-infra-connection")) == \
        decoded(one(installed, "Secret", "claimcheck-infra-connection"))
    for kind, name in [("StatefulSet", "rmq"), ("StatefulSet", "claimcheck-infra-minio"),
                       ("StatefulSet", "claimcheck-infra-postgresql")]:
        assert one(upgraded, kind, name)["spec"]["template"] == one(installed, kind, name)["spec"]["template"], name


APP_ROLE_SECRETS = ("claimcheck-producer", "claimcheck-coordinator", "claimcheck-operator", "claimcheck-reader",
                    "claimcheck-recipient-billing", "claimcheck-recipient-audit")


def test_app_role_secrets_take_each_roles_part_of_the_infra_connection_secret(tmp_path: Path) -> None:
    infra = render(INFRA, fresh=True)
    connection = one(infra, "Secret", "claimcheck-infra-connection")
    conn = decoded(connection)
    with FakeKube() as fake:
        fake.add("secrets", connection)
        fake.add("serviceaccounts", DEFAULT_SERVICE_ACCOUNT)
        app = _docs(_template_against(fake, tmp_path, APP, "claimcheck"))
    env = {name: decoded(one(app, "Secret", name)) for name in APP_ROLE_SECRETS}
    for name, role in [("claimcheck-producer", "PRODUCER"), ("claimcheck-recipient-billing", "CONSUMER"),
                       ("claimcheck-recipient-audit", "CONSUMER"), ("claimcheck-coordinator", "COORDINATOR")]:
        assert env[name]["CLAIMCHECK_S3_ACCESS_KEY_ID"] == conn[f"CLAIMCHECK_S3_{role}_ACCESS_KEY_ID"], name
        assert env[name]["CLAIMCHECK_S3_SECRET_ACCESS_KEY"] == conn[f"CLAIMCHECK_S3_{role}_SECRET_ACCESS_KEY"], name
        assert env[name]["CLAIMCHECK_S3_ENDPOINT_URL"] == conn["CLAIMCHECK_S3_ENDPOINT_URL"]
        amqp = urlsplit(env[name]["CLAIMCHECK_AMQP_URL"])
        assert amqp.hostname == urlsplit(conn["CLAIMCHECK_AMQP_ENDPOINT"]).hostname and amqp.username != "claimcheck"
        assert env[name]["CLAIMCHECK_COORDINATOR_URL"] == f"http://claimcheck-coordinator.{NAMESPACE}.svc.cluster.local:38080"
    assert env["claimcheck-coordinator"]["CLAIMCHECK_DATABASE_URL"] == conn["CLAIMCHECK_DATABASE_URL"]
    assert env["claimcheck-reader"]["CLAIMCHECK_DATABASE_URL"] == conn["CLAIMCHECK_DATABASE_READER_URL"]
    assert env["claimcheck-coordinator"]["CLAIMCHECK_HTTP_PORT"] == "38080"
    provision = decoded(one(app, "Secret", "claimcheck-provision"))
    assert provision["CLAIMCHECK_AMQP_URL"] == conn["CLAIMCHECK_AMQP_ADMIN_URL"]
    assert provision["CLAIMCHECK_MANAGEMENT_URL"] == conn["CLAIMCHECK_MANAGEMENT_URL"]
    # The broker administrator's password, the ledger owner's and the other roles' S3 keys are
    # in no application role's Secret except where that role needs them.
    admin_password = urlsplit(conn["CLAIMCHECK_AMQP_ADMIN_URL"]).password
    owner_password = urlsplit(conn["CLAIMCHECK_DATABASE_URL"]).password
    assert admin_password and owner_password
    for name, data in env.items():
        text = "\n".join(data.values())
        assert admin_password not in text, name
        assert (owner_password in text) == (name == "claimcheck-coordinator"), name
        for role in ("PRODUCER", "CONSUMER", "COORDINATOR"):
            mine = {"claimcheck-producer": "PRODUCER", "claimcheck-coordinator": "COORDINATOR"}.get(
                name, "CONSUMER" if "recipient" in name else "")
            if role != mine:
                assert conn[f"CLAIMCHECK_S3_{role}_SECRET_ACCESS_KEY"] not in text, f"{name} holds {role}'s S3 key"


def test_pointer_keys_are_required_and_never_generated() -> None:
    result = helm("template", "claimcheck", str(APP), "--namespace", NAMESPACE, check=False)
    assert result.returncode != 0
    assert "no pointer keys: run `claimcheck keys pointer`" in result.stderr


def test_pointer_keys_and_generated_credentials_are_kept_on_upgrade(tmp_path: Path) -> None:
    """A second render against the installed release, with no keys in values, reuses the
    installed Secrets' pointer keys, ACK keys, tokens and broker passwords."""
    infra = render(INFRA, fresh=True)
    with FakeKube() as fake:
        fake.add("secrets", one(infra, "Secret", "claimcheck-infra-connection"))
        installed = _docs(_template_against(fake, tmp_path, APP, "claimcheck"))
        for name in APP_ROLE_SECRETS:
            fake.add("secrets", one(installed, "Secret", name))
        upgraded = _docs(_template_against(fake, tmp_path, APP, "claimcheck", "--no-test-keys"))
    for name in APP_ROLE_SECRETS:
        assert decoded(one(upgraded, "Secret", name)) == decoded(one(installed, "Secret", name)), name
    assert decoded(one(upgraded, "Secret", "claimcheck-provision")) == decoded(one(installed, "Secret", "claimcheck-provision"))


def test_pointer_keys_from_an_existing_secret_are_copied_not_mounted(tmp_path: Path) -> None:
    keys = yaml.safe_load(APP_TEST_VALUES.read_text())["signing"]
    existing = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "my-pointer-keys", "namespace": NAMESPACE},
                "data": {"CLAIMCHECK_POINTER_SIGNING_KEY": base64.b64encode(keys["pointerSigningKey"].encode()).decode(),
                         "CLAIMCHECK_POINTER_VERIFY_KEYS": base64.b64encode(keys["pointerVerifyKeys"].encode()).decode()}}
    with FakeKube() as fake:
        fake.add("secrets", existing)
        docs = _docs(_template_against(fake, tmp_path, APP, "claimcheck", "--no-test-keys", "--set",
                                       "signing.existingSecret=my-pointer-keys", "--set", "infra.required=false"))
    assert decoded(one(docs, "Secret", "claimcheck-producer"))["CLAIMCHECK_POINTER_SIGNING_KEY"] == keys["pointerSigningKey"]
    audit = decoded(one(docs, "Secret", "claimcheck-recipient-audit"))
    assert audit["CLAIMCHECK_POINTER_VERIFY_KEYS"] == keys["pointerVerifyKeys"]
    assert "my-pointer-keys" not in yaml.safe_dump([d for d in docs if d["kind"] != "Secret"])


def test_app_install_fails_clearly_without_infra(tmp_path: Path) -> None:
    with FakeKube() as fake:
        fake.add("serviceaccounts", DEFAULT_SERVICE_ACCOUNT)
        result = _template_against(fake, tmp_path, APP, "claimcheck")
    assert result.returncode != 0
    assert "claimcheck-infra-connection" in result.stderr and "install claimcheck-infra first" in result.stderr


@pytest.mark.parametrize("chart", [INFRA, APP], ids=lambda c: c.name)
def test_notes_explain_how_to_reach_the_release(chart: Path, tmp_path: Path) -> None:
    with FakeKube() as fake:
        kubeconfig = fake.kubeconfig(tmp_path / "kubeconfig.json")
        keys = ["-f", str(APP_TEST_VALUES)] if chart == APP else []
        result = subprocess.run([str(HELM), "install", chart.name, str(chart), "--namespace", NAMESPACE, *keys,
                                 "--dry-run=server", "--disable-openapi-validation", "--set",
                                 "infra.required=false" if chart == APP else "keepSecretsOnUninstall=true",
                                 "--kubeconfig", str(kubeconfig)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    if chart == INFRA:
        assert "port-forward svc/claimcheck-infra-haproxy 15672" in notes
        assert "port-forward svc/claimcheck-infra-minio 9001" in notes
    else:
        assert "claimcheckjob-example.yaml" in notes and "get ccj" in notes
        assert "WARNING: no S3 credentials" in notes


def test_every_role_gets_the_coordinator_shard_count() -> None:
    """Producers, consumers, coordinators and the provisioning hook must agree on the shards:
    each role's Secret carries the one value, and it is one the application accepts."""
    docs = render(APP, sets=("coordinator.shards=3",))
    for name in [*APP_ROLE_SECRETS, "claimcheck-provision"]:
        env = decoded(one(docs, "Secret", name))
        if name not in ("claimcheck-reader", "claimcheck-operator"):
            assert env["CLAIMCHECK_COORDINATOR_SHARDS"] == "3", name
    shards = decoded(one(docs, "Secret", "claimcheck-coordinator"))["CLAIMCHECK_COORDINATOR_SHARDS"]
    assert Settings.model_validate({"coordinator_shards": shards}).owned_shards() == [0, 1, 2]
    for wrong in ("0", "257"):
        result = helm("template", "claimcheck", str(APP), "--namespace", NAMESPACE, "-f", str(APP_TEST_VALUES),
                      "--set", f"coordinator.shards={wrong}", check=False)
        assert result.returncode != 0 and "shards" in result.stderr, result.stderr
