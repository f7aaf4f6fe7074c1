"""The infra chart's read-only ledger role, created by reader.sh on a real PostgreSQL server.

reader.sh runs at initialisation (docker-entrypoint-initdb.d) and in a hook Job after every
install and upgrade. Here the rendered script runs twice against a throwaway server of the
PostgreSQL on this machine (initdb in a temporary directory, Unix socket only), with a table
that existed before and one created after it (as `claimcheck migrate` does later): the role
reads both and can write nothing.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import INFRA, one, render

OWNER, READER, DATABASE = "claimcheck", "claimcheck_reader", "claimcheck"
NOBODY = 65534


def _bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found and shutil.which("psql") else None


def _as_postgres_user(cmd: list[str]) -> list[str]:
    """initdb and the server refuse to run as root: drop to nobody when this test runs as root."""
    if os.geteuid() != 0:
        return cmd
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd]


@pytest.fixture(scope="module")
def server() -> Iterator[dict[str, str]]:
    pg = _bin()
    if pg is None:
        pytest.skip("no PostgreSQL server binaries (initdb) and psql on this machine")
    # Not under pytest's tmp_path: its parents are private to root, and the server runs as nobody.
    root = Path(tempfile.mkdtemp(prefix="claimcheck-pg-reader-"))
    root.chmod(0o755)
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    sock.chmod(0o755)
    if os.geteuid() == 0:
        os.chown(root, NOBODY, NOBODY)
        os.chown(sock, NOBODY, NOBODY)
    env = {**os.environ, "PGHOST": str(sock), "PGPORT": "5432"}

    def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(_as_postgres_user(cmd), env=env, capture_output=True, text=True, timeout=120, check=True,
                              cwd=root)

    run([str(pg / "initdb"), "-D", str(data), "-U", OWNER, "--auth=trust"])
    run([str(pg / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o",
         f"-c listen_addresses='' -k {sock} -p 5432", "start"])
    try:
        run(["psql", "-U", OWNER, "-d", "postgres", "-c", f"CREATE DATABASE {DATABASE} OWNER {OWNER}"])
        yield env
    finally:
        subprocess.run(_as_postgres_user([str(pg / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       env=env, capture_output=True, timeout=60, check=False)
        shutil.rmtree(root, ignore_errors=True)


def psql(env: dict[str, str], user: str, *sql: str) -> subprocess.CompletedProcess[str]:
    """Each statement in its own -c (its own transaction), in one session."""
    commands = [arg for statement in sql for arg in ("-c", statement)]
    return subprocess.run(["psql", "-X", "-At", "-U", user, "-d", DATABASE, "-v", "ON_ERROR_STOP=1", *commands],
                          env=env, capture_output=True, text=True, timeout=60)


def reader_script(tmp_path: Path) -> Path:
    script = one(render(INFRA), "ConfigMap", "claimcheck-infra-postgresql-reader")["data"]["reader.sh"]
    path = tmp_path / "reader.sh"
    path.write_text(script)
    path.chmod(0o755)
    return path


def test_reader_role_reads_the_ledger_and_writes_nothing(server: dict[str, str], tmp_path: Path) -> None:
    assert psql(server, OWNER, "CREATE TABLE objects (id int); INSERT INTO objects VALUES (1)").returncode == 0
    env = {**server, "POSTGRES_USER": OWNER, "POSTGRES_DB": DATABASE, "READER_USER": READER,
           "READER_PASSWORD": "reader-password-0123456789"}
    script = reader_script(tmp_path)
    for attempt in range(2):  # initialisation, then an upgrade's hook Job: idempotent
        result = subprocess.run(["/bin/sh", str(script)], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"run {attempt}: {result.stderr}"
        assert f"read-only role {READER} ready" in result.stdout
    # A table created after the role, by the owner (as `claimcheck migrate` does on first start).
    assert psql(server, OWNER, "CREATE TABLE acks (id int); INSERT INTO acks VALUES (2)").returncode == 0

    assert psql(server, READER, "SELECT (SELECT count(*) FROM objects) + (SELECT count(*) FROM acks)").stdout.strip() == "2"
    assert psql(server, READER, "SHOW default_transaction_read_only").stdout.strip() == "on"
    for sql in ("INSERT INTO objects VALUES (3)", "DELETE FROM acks", "UPDATE objects SET id = 0",
                "CREATE TABLE mine (id int)", "DROP TABLE objects", "TRUNCATE acks"):
        # The session default is read-only; a client may switch it off, so the grants must hold alone.
        assert "read-only transaction" in psql(server, READER, sql).stderr
        refused = psql(server, READER, "SET default_transaction_read_only = off", sql)
        assert refused.returncode != 0, f"the reader could run: {sql}"
        assert "permission denied" in refused.stderr or "must be owner" in refused.stderr, refused.stderr
    attributes = psql(server, OWNER, f"SELECT rolsuper, rolcreatedb, rolcreaterole, rolcanlogin FROM pg_roles "
                                     f"WHERE rolname = '{READER}'").stdout.strip()
    assert attributes == "f|f|f|t"
    assert psql(server, OWNER, "SELECT count(*) FROM objects").stdout.strip() == "1"


def test_initdb_and_hook_job_run_the_same_script() -> None:
    docs = render(INFRA)
    sts = one(docs, "StatefulSet", "claimcheck-infra-postgresql")["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in sts["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in sts["volumes"]}
    assert mounts["initdb"] == "/docker-entrypoint-initdb.d"
    assert volumes["initdb"]["configMap"]["name"] == "claimcheck-infra-postgresql-reader"
    job = one(docs, "Job", "claimcheck-infra-postgresql-reader")
    assert set(job["metadata"]["annotations"]["helm.sh/hook"].split(",")) == {"post-install", "post-upgrade"}
    spec = job["spec"]["template"]["spec"]
    assert {v["name"]: v for v in spec["volumes"]}["scripts"]["configMap"]["name"] == "claimcheck-infra-postgresql-reader"
    assert "/scripts/reader.sh" in " ".join(spec["containers"][0]["command"])
