"""``python -m claimcheck.localstack``: the local stack from the command line (``make up``,
``make down``, ``make status``, ``make rmq-stop NODE=1`` ... and scripts/stack.sh call it).

    up | down [--purge] | status | install
    start | stop | kill | restart SERVICE...      rmq-0..2, haproxy, postgres, seaweedfs, prometheus
    rabbitmqctl | rabbitmq-queues | rabbitmq-diagnostics N ARGS...   that CLI against rmq-N
    env ROLE [GROUP] | broker-users GROUPS | s3-config | reader-sql  the role accounts (accounts.py)

Environment: CLAIMCHECK_STACK_DIR (state, default <repo>/.stack), CLAIMCHECK_STACK_PORT_OFFSET
(a second stack's ports, see ports.py).
"""

import json
import logging
import os
import sys
import time

import click

from claimcheck.localstack import accounts
from claimcheck.localstack.daemons import StackError
from claimcheck.localstack.install import install as install_packages
from claimcheck.localstack.services import RABBITMQ_BIN, LocalStack, Service


def _stack() -> LocalStack:
    if os.geteuid() != 0:
        raise click.ClickException("run as root (the stack starts system daemons as root and postgres)")
    return LocalStack.from_env()


def _services(names: tuple[str, ...]) -> list[Service]:
    stack = _stack()
    try:
        return [stack.service(name) for name in names]
    except StackError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group(help=__doc__, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)


@main.command()
def install() -> None:
    """apt-get and pip install whatever the stack is missing."""
    _stack()
    install_packages()


@main.command()
def up() -> None:
    """Install, start everything, wait until ready, print the endpoints."""
    started = time.monotonic()
    stack = _stack()
    stack.up()
    click.echo(stack.summary())
    click.echo(f"stack up in {time.monotonic() - started:.0f}s")


@main.command()
@click.option("--purge", is_flag=True, help="also delete all state")
def down(purge: bool) -> None:
    """Stop everything."""
    _stack().down(purge)


@main.command()
def status() -> None:
    """One line per service; exit 0 only if all are up."""
    lines = LocalStack.from_env().status()
    for line in lines:
        click.echo(line.line())
    sys.exit(0 if all(line.running for line in lines) else 1)


def _per_service(action: str, help_text: str) -> None:
    @main.command(action, help=help_text)
    @click.argument("services", nargs=-1, required=True)
    def command(services: tuple[str, ...]) -> None:
        for service in _services(services):
            getattr(service, action)()


_per_service("start", "Start SERVICES and wait until each is ready (a node: back in the cluster).")
_per_service("stop", "Stop SERVICES gracefully (a node: like `kubectl delete pod`).")
_per_service("kill", "kill -9 SERVICES (a node: its Erlang VM).")
_per_service("restart", "Stop and start SERVICES (HAProxy: clients see their connections drop).")


def _rabbitmq_cli(tool: str) -> None:
    @main.command(tool, context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
                  help=f"Run {tool} against node N with the stack's cookie and environment.")
    @click.argument("node", type=int)
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(node: int, args: tuple[str, ...]) -> None:
        try:
            target = LocalStack.from_env().node(node)
        except StackError as exc:
            raise click.BadParameter(str(exc)) from None
        os.execve(RABBITMQ_BIN / tool, [tool, "-n", target.node_name, *args], target.env())


for _tool in ("rabbitmqctl", "rabbitmq-queues", "rabbitmq-diagnostics"):
    _rabbitmq_cli(_tool)


@main.command("env")
@click.argument("role", type=click.Choice(["producer", "recipient", "coordinator", "reader"]))
@click.argument("group", required=False)
def role_env(role: str, group: str | None) -> None:
    """The CLAIMCHECK_*=... variables of ROLE (recipient: of GROUP), one per line."""
    click.echo("\n".join(f"{key}={value}" for key, value in accounts.role_env(role, group).items()))


@main.command("broker-users")
@click.argument("groups", default="")
def broker_users(groups: str) -> None:
    """CLAIMCHECK_BROKER_USERS for `claimcheck provision`: producer, coordinator and GROUPS (comma-separated)."""
    click.echo(accounts.broker_users([name for name in groups.split(",") if name]))


@main.command("s3-config")
def s3_config() -> None:
    """SeaweedFS's identities file (JSON)."""
    click.echo(json.dumps(accounts.s3_config(), indent=2))


@main.command("reader-sql")
def reader_sql() -> None:
    """The SQL that creates the read-only PostgreSQL role."""
    click.echo(accounts.reader_sql())


def run() -> None:
    """Entry point: a StackError ends in its message and exit status 1, not a traceback."""
    try:
        main()
    except StackError as exc:
        click.echo(f"localstack: error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    run()
