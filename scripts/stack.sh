#!/usr/bin/env bash
# The local stack (RabbitMQ 3-node cluster behind HAProxy, PostgreSQL 15, SeaweedFS as S3,
# Prometheus; no Docker): a thin entry for make and CI. The stack itself is Python,
# apps/claimcheck/localstack (ports in ports.py, services in services.py); this runs its command
# line from the project's venv (`make install` creates it). Run as root.
#
#   scripts/stack.sh up | down [--purge] | status | install
#   scripts/stack.sh start|stop|kill|restart SERVICE...   (rmq-0..2, haproxy, postgres, seaweedfs, prometheus)
#   scripts/stack.sh rabbitmqctl N ARGS...                 (also rabbitmq-queues, rabbitmq-diagnostics)
#   scripts/stack.sh --help
#
# Environment: VENV (default <repo>/.venv), CLAIMCHECK_STACK_DIR (state, default <repo>/.stack),
# CLAIMCHECK_STACK_PORT_OFFSET (a second stack beside the usual one).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
venv=${VENV:-$repo/.venv}
if [[ ! -x $venv/bin/python ]]; then
    echo "stack.sh: no venv at $venv: run \`make install\` (or set VENV=...)" >&2
    exit 1
fi
exec "$venv/bin/python" -m claimcheck.localstack "$@"
