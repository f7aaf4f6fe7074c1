#!/usr/bin/env bash
# Create the kind cluster, build and load the claimcheck image, install both charts,
# wait until everything is ready and print the endpoints. Safe to run again: an existing
# cluster is reused and the charts are upgraded in place.
#
# Needs: docker (running), kind, and kubectl (else the pinned one from scripts/helm.sh).
# Knobs (environment):
#   KIND_CLUSTER_NAME   cluster name                      (claimcheck)
#   KIND_NODE_IMAGE     kind node image                   (kindest/node:v1.32.2)
#   CLAIMCHECK_NAMESPACE namespace of both releases       (claimcheck)
#   CLAIMCHECK_IMAGE_TAG tag of the locally built image   (the app chart's appVersion)
#   SKIP_BUILD=1        reuse an image already built with that tag
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"

CLUSTER="${KIND_CLUSTER_NAME:-claimcheck}"
NODE_IMAGE="${KIND_NODE_IMAGE:-kindest/node:v1.32.2}"
NS="${CLAIMCHECK_NAMESPACE:-claimcheck}"
APP_VERSION="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/claimcheck/Chart.yaml)"
TAG="${CLAIMCHECK_IMAGE_TAG:-${APP_VERSION}}"
IMAGE="claimcheck:${TAG}"
CTX="kind-${CLUSTER}"

log() { printf '==> %s\n' "$*"; }
die() { printf 'kind-up: %s\n' "$*" >&2; exit 1; }

command -v docker >/dev/null || die "docker is not installed (https://docs.docker.com/get-docker/)"
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable (is it running? can this user use it?)"
command -v kind >/dev/null || die "kind is not installed (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"

bash scripts/helm.sh
HELM="${ROOT}/.tools/bin/helm"
KUBECTL="$(command -v kubectl || echo "${ROOT}/.tools/bin/kubectl")"
k() { "${KUBECTL}" --context "${CTX}" "$@"; }
h() { "${HELM}" --kube-context "${CTX}" "$@"; }

if kind get clusters 2>/dev/null | grep -qx "${CLUSTER}"; then
  log "reusing kind cluster ${CLUSTER}"
else
  log "creating kind cluster ${CLUSTER} (${NODE_IMAGE})"
  kind create cluster --name "${CLUSTER}" --config kind-config.yaml --image "${NODE_IMAGE}" --wait 180s
fi

if [[ "${SKIP_BUILD:-0}" != "1" ]]; then
  log "building ${IMAGE}"
  docker build --quiet -f images/Dockerfile -t "${IMAGE}" . >/dev/null
fi
log "loading ${IMAGE} into the cluster"
kind load docker-image "${IMAGE}" --name "${CLUSTER}" >/dev/null

log "installing claimcheck-infra (RabbitMQ rmq-0..2, HAProxy, MinIO, PostgreSQL)"
h upgrade --install claimcheck-infra charts/claimcheck-infra \
  --namespace "${NS}" --create-namespace \
  -f scripts/kind-infra-values.yaml --wait --timeout 15m
k -n "${NS}" rollout status statefulset/rmq --timeout 10m
k -n "${NS}" wait --for=condition=Ready pod -l app.kubernetes.io/instance=claimcheck-infra,app.kubernetes.io/component=rabbitmq --timeout 10m
k -n "${NS}" rollout status deployment/claimcheck-infra-haproxy --timeout 5m
k -n "${NS}" rollout status statefulset/claimcheck-infra-minio --timeout 5m
k -n "${NS}" rollout status statefulset/claimcheck-infra-postgresql --timeout 5m

log "installing claimcheck (coordinator, operator, ClaimCheckJob CRD)"
h upgrade --install claimcheck charts/claimcheck \
  --namespace "${NS}" \
  -f scripts/kind-app-values.yaml --set image.repository=claimcheck --set-string image.tag="${TAG}" \
  --wait --timeout 10m
k wait --for=condition=Established crd/claimcheckjobs.claimcheck.io --timeout 2m
k -n "${NS}" rollout status deployment/claimcheck-coordinator --timeout 5m
k -n "${NS}" rollout status deployment/claimcheck-operator --timeout 5m


cat <<MSG

claimcheck is running in kind cluster '${CLUSTER}', namespace '${NS}' (kubectl context ${CTX}).

  RabbitMQ UI     http://127.0.0.1:31672     user claimcheck
                  password: kubectl --context ${CTX} -n ${NS} get secret rmq-default-user -o jsonpath='{.data.password}' | base64 -d
  AMQP (HAProxy)  amqp://127.0.0.1:30672
  MinIO console   http://127.0.0.1:30901
                  user:     kubectl --context ${CTX} -n ${NS} get secret claimcheck-infra-minio -o jsonpath='{.data.rootUser}' | base64 -d
                  password: kubectl --context ${CTX} -n ${NS} get secret claimcheck-infra-minio -o jsonpath='{.data.rootPassword}' | base64 -d
  MinIO S3 API    http://127.0.0.1:30900
  Coordinator     http://127.0.0.1:30080/readyz
  Prometheus      http://127.0.0.1:30090
  Grafana         http://127.0.0.1:30300     dashboard "claimcheck" (see docs/observability.md)

Next steps:
  kubectl -n ${NS} apply -f manifests/claimcheckjob-example.yaml
  kubectl -n ${NS} get ccj -w                         # until PHASE is Succeeded
  curl -s http://127.0.0.1:30080/jobs/${NS}.<name>     # published / acked / deleted
  kubectl -n ${NS} delete pod rmq-1                   # failover: quorum queues keep going
  make kind-down                                      # delete the cluster
See docs/kubernetes.md for the walkthrough.
MSG
