"""Benchmarks of the claim-check data path against the local stack (issue 7).

``python -m bench`` runs the suite and writes ``docs/benchmarks.md`` and ``docs/bench/*.png``.
Every run works in its own RabbitMQ vhost, PostgreSQL database and S3 bucket, named after the
run id, and removes them at the end, so it never touches the stack's default ledger or queues.
Benchmarks are never part of the tests.
"""
