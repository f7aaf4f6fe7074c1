"""What the fault suite asks of the local stack, through its Python interface (claimcheck.localstack):
which node leads or serves a queue, whether a node is quorum-critical, and restoring everything."""

import json
from collections.abc import Iterable

from claimcheck.localstack.daemons import StackError
from claimcheck.localstack.services import LocalStack, RabbitNode
from tests.testkit import wait_until

STACK = LocalStack.from_env()


def running_node() -> RabbitNode:
    """A RabbitMQ node that is up, to run the CLI against."""
    node = STACK.answering_node()
    if node is None:
        raise StackError("no RabbitMQ node is running")
    return node


def _list_queues(column: str, queues: Iterable[str]) -> dict[str, str]:
    wanted = set(queues)
    rows = json.loads(running_node().rabbitmqctl("list_queues", "name", column, "--formatter", "json"))
    return {row["name"]: row[column] for row in rows if row["name"] in wanted}


def queue_leaders(queues: Iterable[str]) -> dict[str, str]:
    """Quorum queue -> node name of its current leader (``list_queues name leader``, 3.10)."""
    return _list_queues("leader", queues)


def queue_consumers(queues: Iterable[str]) -> dict[str, int]:
    """Quorum queue -> number of consumers (``list_queues name consumers``)."""
    return {name: int(count) for name, count in _list_queues("consumers", queues).items()}


def node_index(node_name: str) -> int:
    """``rmq-1@localhost`` -> 1."""
    return next(node.n for node in STACK.nodes if node.node_name == node_name)


def quorum_critical(n: int) -> bool:
    """Would stopping rmq-N leave some quorum queue without a quorum?"""
    return STACK.node(n).cli("rabbitmq-queues", "check_if_node_is_quorum_critical").returncode != 0


def wait_not_quorum_critical(n: int, timeout: float, poll: float) -> None:
    """Until no quorum queue depends on rmq-N (stopping it now leaves every queue a quorum)."""
    wait_until(lambda: not quorum_critical(n), timeout, f"rmq-{n} not quorum-critical", poll=poll)


def restore_stack() -> list[str]:
    """Bring every service of the stack back (idempotent); return what had to be restarted.

    Ends only when all three RabbitMQ nodes run in one cluster, no quorum queue depends on a
    lagging member (no node is quorum-critical), HAProxy routes AMQP, PostgreSQL and S3 answer.
    """
    needed = [*STACK.nodes, STACK.postgresql, STACK.s3, STACK.haproxy]
    restarted: list[str] = []
    for service in needed:
        if not service.status().running:
            restarted.append(service.name)
            try:
                if service is STACK.haproxy:
                    STACK.haproxy.restart()  # waits until it routes to a node again
                else:
                    service.start()
            except StackError as exc:  # the wait below decides
                print(f"restore: {exc}")
    wait_until(
        lambda: len(STACK.running_nodes()) == len(STACK.nodes) and all(service.status().running for service in needed),
        180,
        "the whole stack running, RabbitMQ cluster of 3",
        poll=1.0,
    )
    for n in range(len(STACK.nodes)):
        wait_not_quorum_critical(n, 180, poll=1.0)
    return restarted
