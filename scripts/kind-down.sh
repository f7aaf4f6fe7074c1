#!/usr/bin/env bash
# Delete the kind cluster created by scripts/kind-up.sh (and every volume in it).
set -euo pipefail
CLUSTER="${KIND_CLUSTER_NAME:-claimcheck}"
command -v kind >/dev/null || { echo "kind-down: kind is not installed" >&2; exit 1; }
if kind get clusters 2>/dev/null | grep -qx "${CLUSTER}"; then
  kind delete cluster --name "${CLUSTER}"
else
  echo "kind-down: no kind cluster named ${CLUSTER}"
fi
