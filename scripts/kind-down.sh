#!/usr/bin/env bash
# Delete the kind cluster created by scripts/kind-up.sh (and every volume in it), through
# scripts/kind_stack.py like the e2e fixtures.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
exec "${ROOT}/.venv/bin/python" scripts/kind_stack.py down
