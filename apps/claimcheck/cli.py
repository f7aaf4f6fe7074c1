"""The ``claimcheck`` command: one subcommand per component, plus demo and status.

Seed-compatible knobs are read from the environment too (``MSG_SIZE``, ``COUNT``, ``VERIFY``,
``RECIPIENT``, ``RECIPIENTS``), so ``make producer MSG_SIZE=1MB COUNT=5 VERIFY=1`` works.
"""

import json
import re
import signal
import sys
import threading
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from claimcheck import logsetup, runtime, store, topology
from claimcheck.config import InsecureDefault, Settings, settings
from claimcheck.localstack.ports import LOCAL
from claimcheck.protocol import JOB_PATTERN, RECIPIENT_PATTERN, RESERVED_RECIPIENTS
from claimcheck.publisher import BrokerRefused, BrokerSession
from claimcheck.signing import KeyFormatError
from claimcheck.sizes import format_size, parse_size
from claimcheck.topology import NotProvisioned

_RECIPIENT = re.compile(RECIPIENT_PATTERN)
_JOB = re.compile(JOB_PATTERN)


def _size(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _recipients(ctx: click.Context, param: click.Parameter, value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise click.BadParameter("at least one recipient is required")
    for name in names:
        if not _RECIPIENT.match(name):
            raise click.BadParameter(f"invalid recipient {name!r}: use lowercase letters, digits and '-'")
        if name in RESERVED_RECIPIENTS:
            raise click.BadParameter(f"recipient name {name!r} is reserved")
    if len(set(names)) != len(names):
        raise click.BadParameter("recipients must not repeat")
    return names


def _recipient(ctx: click.Context, param: click.Parameter, value: str) -> str:
    names = _recipients(ctx, param, value)
    if len(names) != 1:
        raise click.BadParameter(f"exactly one recipient expected, got {value!r}")
    return names[0]


def _check_configured(names: list[str], allowed: frozenset[str], hint: str) -> None:
    """Refuse recipient groups outside CLAIMCHECK_RECIPIENTS, when that list is set."""
    unknown = sorted(set(names) - allowed) if allowed else []
    if unknown:
        raise click.BadParameter(
            f"unknown recipient {unknown[0]!r}; configured recipients: {', '.join(sorted(allowed))} "
            "(CLAIMCHECK_RECIPIENTS)",
            param_hint=hint,
        )


def _job(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not _JOB.match(value):
        raise click.BadParameter(f"invalid job {value!r}: letters, digits, '.', '_' and '-' only")
    return value


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def request_stop(*_: object) -> None:
        # A second signal during the first one's set() would block on the event's lock forever.
        if not stop.is_set():
            stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    return stop


def _emit(document: dict[str, Any]) -> None:
    click.echo(json.dumps(document, sort_keys=True))


def main() -> None:
    """Entry point: errors in arguments or configuration end in one line and exit code 2."""
    runtime.tune()  # before any thread starts
    try:
        code = cli.main(prog_name="claimcheck", standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"claimcheck: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "CLAIMCHECK_" + "_".join(str(part) for part in first["loc"]).upper()
        click.echo(f"claimcheck: error: invalid configuration {name}: {first['msg']}", err=True)
        sys.exit(2)
    except (BrokerRefused, NotProvisioned, InsecureDefault, KeyFormatError) as exc:  # no retry helps
        click.echo(f"claimcheck: error: {exc}", err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="claimcheck")
def cli() -> None:
    """Claim-check offloading for RabbitMQ: payloads in S3, pointers on the broker,
    deletion once every recipient confirmed."""


@cli.command()
@click.option("--job", callback=_job, envvar="JOB", help="Job id (default: a new run-... id).")
@click.option("--count", type=click.IntRange(min=1, max=1_000_000), default=5, envvar="COUNT", show_default=True)
@click.option("--size", "size", default="1MB", envvar="MSG_SIZE", callback=_size, show_default=True,
              help="Payload size: 64KB, 1MB, 1MiB, 2GB ...")
@click.option("--recipients", default="billing,audit", envvar="RECIPIENTS", callback=_recipients,
              show_default=True, help="Comma-separated recipient groups that must each confirm.")
@click.option("--verify/--no-verify", default=False, envvar="VERIFY",
              help="Wait until every object is confirmed by all recipients and deleted.")
@click.option("--timeout", type=click.FloatRange(min=1), default=300.0, show_default=True,
              help="Seconds --verify waits.")
@click.option("--parallelism", type=click.IntRange(1, 64), default=2, show_default=True, help="Concurrent uploads.")
@click.option("--rate", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Publish at most this many pointers per second (0: unlimited).")
@click.option("--inline/--no-inline", default=False, show_default=True,
              help="Let payloads up to CLAIMCHECK_INLINE_THRESHOLD travel inside the pointer (default: all through S3).")
@click.option("--http-port", type=click.IntRange(0, 65535), default=0, envvar="CLAIMCHECK_PRODUCER_HTTP_PORT",
              help="Serve /healthz, /readyz and /metrics on this port while running (0: none).")
def producer(job: str | None, count: int, size: int, recipients: list[str], verify: bool, timeout: float,
             parallelism: int, rate: float, inline: bool, http_port: int) -> None:
    """Generate synthetic JSON payloads and send them (gzip into S3, publish their pointers)."""
    from claimcheck import producer as producing
    from claimcheck.httpapi import routes_for, serve
    from claimcheck.progressbar import progress as progress_bar

    config = settings()
    config.pointer_signer()  # refuse bad or built-in keys before anything is produced
    _check_configured(recipients, config.allowed_recipients(), "'--recipients'")
    logsetup.configure(config.log_level, "producer")
    job = job or producing.new_job_id()
    click.echo(f"job {job}: producing {count} x {format_size(size)} for recipients {', '.join(recipients)}")
    if http_port:  # served until the command ends, --verify included, so a last scrape sees the totals
        click.get_current_context().call_on_close(serve(http_port, routes_for(lambda: None, [])).shutdown)
    with progress_bar("published", count) as tick:
        report = producing.run(config, producing.RunRequest(job, count, size, recipients, parallelism, rate, inline),
                               lambda pointer: tick(pointer.payload_size))
    click.echo(
        f"published {report.count} pointers in {report.seconds:.2f} s "
        f"(payload {format_size(report.payload_bytes)}, stored gzip {format_size(report.object_bytes)})"
    )
    summary: dict[str, Any] = {"job": job, "published": report.count, "payload_bytes": report.payload_bytes,
                               "object_bytes": report.object_bytes}
    if verify:
        _verify(config, job, report.count, timeout, summary)
        return
    _emit(summary)


def _verify(config: Settings, job: str, count: int, timeout: float, summary: dict[str, Any]) -> None:
    """Wait until ``count`` objects of ``job`` are deleted; print the outcome; exit 1 if they are not."""
    from claimcheck.deletion import NotDeleted, wait_until_deleted

    try:
        deletion = wait_until_deleted(job, count, timeout, settings=config)
    except NotDeleted as exc:
        deletion = exc.report
    summary |= {"acked": deletion.acked, "deleted": deletion.deleted, "leftover_objects": deletion.leftover_objects,
                "verify_seconds": deletion.seconds}
    leftovers = deletion.leftover_objects
    left = "(a producer may not list the bucket)" if leftovers is None else f"{leftovers} objects left in s3"
    click.echo(
        f"verify: {deletion.deleted}/{count} deleted after confirmation by every recipient, "
        f"acks per recipient {deletion.acked}, {left} -> {'OK' if deletion.ok else 'FAILED'}"
    )
    _emit(summary)
    if not deletion.ok:
        sys.exit(1)


@cli.command()
@click.option("--recipient", default="billing", envvar="RECIPIENT", callback=_recipient, show_default=True,
              help="The recipient group this replica belongs to.")
@click.option("--job", callback=_job, help="With --expect: the job to wait for.")
@click.option("--expect", type=click.IntRange(min=1), help="Exit once this many objects of --job are deleted.")
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Payloads verified concurrently (also the prefetch).")
@click.option("--hook", help="Processing hook as module:function, called with (pointer, payload stream).")
@click.option("--http-port", type=click.IntRange(0, 65535), default=0, envvar="CLAIMCHECK_CONSUMER_HTTP_PORT",
              help="Serve /healthz, /readyz and /metrics on this port (0: none).")
def consumer(recipient: str, job: str | None, expect: int | None, workers: int, hook: str | None,
             http_port: int) -> None:
    """Consume pointers of one recipient group, verify payloads, send business ACKs."""
    from claimcheck.consumer import RecipientConsumer, load_hook, noop_hook, wait_for_job

    if (job is None) != (expect is None):
        raise click.UsageError("--job and --expect go together")
    config = settings()
    _check_configured([recipient], config.allowed_recipients(), "'--recipient'")
    logsetup.configure(config.log_level, f"consumer[{recipient}]")
    try:
        processing = load_hook(hook) if hook else noop_hook
    except (ValueError, ImportError, AttributeError) as exc:
        raise click.BadParameter(str(exc), param_hint="--hook") from None
    stop = _stop_on_signals()
    replica = RecipientConsumer(config, recipient, processing, workers)
    if job is not None and expect is not None:
        threading.Thread(target=wait_for_job, args=(config.coordinator_url, job, expect, stop), daemon=True).start()
    replica.run(stop, http_port or None)
    _emit(vars(replica.stats))


def _meta(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    items = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep:
            raise click.BadParameter(f"{value!r} is not key=value")
        items[key] = text
    return items


@cli.command()
@click.argument("source", type=click.Path(exists=True, allow_dash=True, path_type=Path))
@click.option("--recipients", required=True, callback=_recipients, help="Comma-separated recipient groups.")
@click.option("--job", callback=_job, help="Job id (default: a new run-... id).")
@click.option("--content-type", help="Media type (default: guessed from the file name, else application/octet-stream).")
@click.option("--meta", "metadata", multiple=True, callback=_meta, help="key=value metadata; repeatable.")
def send(source: Path, recipients: list[str], job: str | None, content_type: str | None,
         metadata: dict[str, str]) -> None:
    """Send a file, standard input (-) or every file in a directory; print each pointer's object id."""
    from claimcheck.files import filename_metadata, files_to_send, guess_content_type
    from claimcheck.producer import Producer
    from claimcheck.progressbar import progress as progress_bar

    config = settings()
    logsetup.configure(config.log_level, "send")
    with Producer(config, job=job) as producer:
        try:
            if str(source) == "-":
                stdin = iter(lambda: sys.stdin.buffer.read(1024 * 1024), b"")
                pointer = producer.send(stdin, recipients=recipients, content_type=content_type or "application/octet-stream",
                                        metadata=metadata)
                click.echo(pointer.object_id)
                return
            files = files_to_send(source)
            with progress_bar("sent", len(files)) if source.is_dir() else nullcontext(lambda _=0: None) as tick:
                for path in files:
                    pointer = producer.send(path, recipients=recipients, content_type=content_type or guess_content_type(path),
                                            metadata=filename_metadata(path) | metadata)
                    click.echo(f"{pointer.object_id}\t{path}" if source.is_dir() else pointer.object_id)
                    tick(pointer.payload_size)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None


@cli.command()
@click.option("--recipient", required=True, callback=_recipient, help="The recipient group to receive as.")
@click.option("--output", required=True, type=click.Path(file_okay=False, writable=True, path_type=Path),
              help="Directory for DIR/<object id> and DIR/<object id>.json (created if missing).")
@click.option("--job", callback=_job, help="With --expect: the job to wait for.")
@click.option("--expect", type=click.IntRange(min=1), help="Exit once this many objects of --job are deleted.")
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True)
def receive(recipient: str, output: Path, job: str | None, expect: int | None, workers: int) -> None:
    """Write every verified payload of a recipient group to a directory, atomically, then ACK it."""
    from claimcheck.consumer import Consumer, wait_for_job
    from claimcheck.files import write_received

    if (job is None) != (expect is None):
        raise click.UsageError("--job and --expect go together")
    config = settings()
    logsetup.configure(config.log_level, f"receive[{recipient}]")
    output.mkdir(parents=True, exist_ok=True)
    stop = _stop_on_signals()
    consumer = Consumer(recipient, lambda message: click.echo(write_received(output, message)), workers=workers,
                        settings=config)
    if job is not None and expect is not None:
        threading.Thread(target=wait_for_job, args=(config.coordinator_url, job, expect, stop), daemon=True).start()
    consumer.run(stop)
    _emit(vars(consumer.stats))


@cli.command()
@click.option("--http-port", type=click.IntRange(0, 65535), envvar="CLAIMCHECK_HTTP_PORT", default=LOCAL.coordinator,
              show_default=True, help="Port of the health, readiness and progress endpoint (0: none).")
def coordinator(http_port: int) -> None:
    """Count business ACKs in the ledger and delete objects every recipient confirmed."""
    from claimcheck.coordinator import Coordinator

    config = settings()
    logsetup.configure(config.log_level, "coordinator")
    Coordinator(config).run(_stop_on_signals(), http_port or None)


@cli.command()
def migrate() -> None:
    """Apply the ledger's schema migrations and exit."""
    from claimcheck.migrate import migrate as apply

    applied = apply(settings().database_url)
    click.echo(f"applied migrations {applied}" if applied else "ledger schema is up to date")


@cli.command(name="sweep")
@click.option("--grace", type=click.FloatRange(min=0), default=None,
              help="Only objects older than this many seconds (default: CLAIMCHECK_SWEEP_GRACE_SECONDS).")
@click.option("--prefix", default="", help="Only keys under this prefix, e.g. a job's 'run-.../'.")
def sweep_orphans(grace: float | None, prefix: str) -> None:
    """Delete stored payloads that no live pointer references (one pass of the coordinator's sweeper)."""
    from claimcheck.ledger import Ledger
    from claimcheck.sweeper import PointerQueueBarrier, sweep

    config = settings()
    logsetup.configure(config.log_level, "sweep")
    ledger = Ledger(config.database_url)
    try:
        swept = sweep(store.client(config), ledger, config.s3_bucket,
                      config.sweep_grace_seconds if grace is None else grace, PointerQueueBarrier(config, ledger),
                      prefix, key_prefix=config.s3_key_prefix)
    finally:
        ledger.close()
    click.echo(f"swept {swept} orphaned objects")


@cli.command(name="topology")
@click.option("--recipients", default="billing,audit", envvar="RECIPIENTS", callback=_recipients, show_default=True)
def declare_topology(recipients: list[str]) -> None:
    """Declare the exchanges and quorum queues, including the recipients' queues."""
    config = settings()
    session = BrokerSession(config.amqp_url, lambda channel: topology.declare(channel, recipients, config.coordinator_shards))
    session.channel()
    session.close()
    click.echo(f"declared topology for recipients {', '.join(recipients)} ({_shards(config)})")


@cli.command()
@click.option("--recipients", default="billing,audit", envvar="RECIPIENTS", callback=_recipients, show_default=True)
def provision(recipients: list[str]) -> None:
    """An administrator's step: declare the topology and create each role's broker user
    (CLAIMCHECK_BROKER_USERS="role=user:password,..." with CLAIMCHECK_MANAGEMENT_URL)."""
    from claimcheck.provisioning import parse_users
    from claimcheck.provisioning import provision as apply

    config = settings()
    try:
        users = parse_users(config.broker_users)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    apply(config.amqp_url, config.management_url, recipients, users, config.confirm_timeout, config.coordinator_shards)
    roles = ", ".join(user.role for user in users) or "no role accounts (CLAIMCHECK_BROKER_USERS is empty)"
    click.echo(f"provisioned the topology for recipients {', '.join(recipients)} ({_shards(config)}) and {roles}")


def _shards(config: Settings) -> str:
    count = config.coordinator_shards
    return "1 coordinator shard" if count == 1 else f"{count} coordinator shards"


@cli.group()
def keys() -> None:
    """Generate keys for the settings of docs/security.md (printed as VAR=value lines)."""


@keys.command(name="pointer")
@click.option("--kid", default="p1", show_default=True, help="Key id (shows in the signature header).")
def pointer_key(kid: str) -> None:
    """A new Ed25519 pair: the producers' signing key and the verify key for everyone else."""
    from claimcheck.signing import new_pointer_key

    signing_key, verify_key = new_pointer_key(kid)
    click.echo(f"CLAIMCHECK_POINTER_SIGNING_KEY={signing_key}")
    click.echo(f"CLAIMCHECK_POINTER_VERIFY_KEYS={verify_key}")


@keys.command(name="secret")
@click.option("--kid", default="k1", show_default=True, help="Key id.")
def secret_key(kid: str) -> None:
    """A new kid:secret for CLAIMCHECK_ACK_SIGNING_KEY or CLAIMCHECK_COORDINATOR_KEY."""
    import secrets

    click.echo(f"{kid}:{secrets.token_urlsafe(32)}")


@cli.command()
@click.option("--job", callback=_job, help="Only this job.")
def status(job: str | None) -> None:
    """Print the ledger: runs, objects pending per recipient, the oldest pending, dead letters."""
    from claimcheck.status import ledger_report

    config = settings()
    click.echo(ledger_report(config.database_url, job, config.amqp_url))


@cli.command()
@click.option("--count", type=click.IntRange(min=1, max=10_000), default=5, envvar="COUNT", show_default=True)
@click.option("--size", "size", default="1MB", envvar="MSG_SIZE", callback=_size, show_default=True)
@click.option("--timeout", type=click.FloatRange(min=1), default=180.0, show_default=True)
def demo(count: int, size: int, timeout: float) -> None:
    """Run coordinator, consumers of two recipient groups and a producer; print what happened."""
    from claimcheck.demo import run_demo

    summary = run_demo(settings(), count, size, timeout)
    _emit(summary)
    if summary["deleted"] != summary["published"] or summary["leftover_objects"] != 0:
        sys.exit(1)
