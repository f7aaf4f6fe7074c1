#!/usr/bin/env bash
# Create (or reuse) the kind cluster, build and load the claimcheck image, install or upgrade
# both charts, wait until everything is ready and print the endpoints. Safe to run again.
#
# The work is done by scripts/kind_stack.py, the same code the e2e fixtures (tests/e2e) use,
# on pytest-kind's KindCluster. Needs: docker (running) and kind; helm and kubectl come from
# scripts/helm.sh. Knobs: KIND_CLUSTER_NAME, KIND_NODE_IMAGE, CLAIMCHECK_NAMESPACE,
# CLAIMCHECK_IMAGE_TAG, SKIP_BUILD=1 (see scripts/kind_stack.py).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
exec "${ROOT}/.venv/bin/python" scripts/kind_stack.py up
