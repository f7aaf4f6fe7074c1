"""Payloads sent inline through RabbitMQ: what the product exists to avoid.

Publishes ``--count`` payloads of ``--size`` bytes (the product's own JSON generator,
``claimcheck.payload.generate``, joined into one message body as an inline sender must) to a
direct exchange that fans each one out to ``--queues`` quorum queues, declared with the same
arguments as the product's work queues. Every publish is persistent, mandatory and waits for
its confirm, as the product's publisher does. Prints one JSON document.

    python -m bench.inline --url AMQP_URL --queues q1,q2 --size BYTES --count N [--exchange X]
"""

import argparse
import json
import time
import uuid

import pika
import pika.exceptions

EXCHANGE = "bench.inline"


def declare(channel: pika.adapters.blocking_connection.BlockingChannel, queues: list[str]) -> None:
    channel.exchange_declare(EXCHANGE, exchange_type="direct", durable=True)
    for queue in queues:
        channel.queue_declare(queue, durable=True, arguments={
            "x-queue-type": "quorum", "x-dead-letter-exchange": "claimcheck.dead", "x-delivery-limit": 10})
        channel.queue_bind(queue, EXCHANGE, routing_key=queue)


def body_of(size: int, seq: int) -> bytes:
    from claimcheck import payload

    object_id = uuid.uuid4().hex
    try:
        return b"".join(payload.generate(size, "bench-inline", object_id, seq))
    except ValueError:  # below the generator's minimum: plain filler
        return b"x" * size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--queues", required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()
    queues = args.queues.split(",")
    params = pika.URLParameters(args.url)
    params.heartbeat = 60
    params.blocked_connection_timeout = 120
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    declare(channel, queues)
    channel.confirm_delivery()
    result: dict[str, object] = {"published": 0, "error": "", "size": args.size}
    generate_seconds = 0.0
    started = time.monotonic()
    try:
        for seq in range(args.count):
            t0 = time.monotonic()
            body = body_of(args.size, seq)
            generate_seconds += time.monotonic() - t0
            properties = pika.BasicProperties(delivery_mode=2, content_type="application/json",
                                              message_id=uuid.uuid4().hex, headers={"CC": queues[1:]})
            channel.basic_publish(EXCHANGE, queues[0], body, properties, mandatory=True)
            result["published"] = int(result["published"]) + 1  # type: ignore[call-overload]
            del body
    except (pika.exceptions.AMQPError, OSError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    result["seconds"] = time.monotonic() - started
    result["generate_seconds"] = generate_seconds
    try:
        if connection.is_open:
            connection.close()
    except Exception:  # noqa: BLE001 - the broker may have closed it already
        pass
    print(json.dumps(result))


if __name__ == "__main__":
    main()
