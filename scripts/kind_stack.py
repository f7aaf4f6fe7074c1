"""The one code path behind `make kind-up`, `make kind-down` and the e2e fixtures (tests/e2e).

The cluster, image loading, kubectl and port-forwarding go through pytest-kind's
``KindCluster``; helm and the Docker build are the only other tools. Running ``up`` on an
existing cluster reuses it and upgrades both releases in place (idempotent; the e2e suite
checks that a second run restarts nothing).

    python scripts/kind_stack.py up     # what `make kind-up` runs
    python scripts/kind_stack.py down   # what `make kind-down` runs

Knobs (environment): KIND_CLUSTER_NAME (claimcheck), KIND_NODE_IMAGE (pinned below),
CLAIMCHECK_NAMESPACE (claimcheck), CLAIMCHECK_IMAGE_TAG (the app chart's appVersion),
SKIP_BUILD=1 (reuse an image already built with that tag).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from pytest_kind import KindCluster

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / ".tools"
HELM = TOOLS / "bin" / "helm"
KUBECTL = TOOLS / "bin" / "kubectl"
# kind v0.27.0's image for Kubernetes 1.32 (its release notes give the digest).
NODE_IMAGE = "kindest/node:v1.32.2@sha256:f226345927d7e348497136874b6d207e0b32cc52154ad8323129352923a3142f"
INFRA_RELEASE, APP_RELEASE = "claimcheck-infra", "claimcheck"


def app_version() -> str:
    for line in (ROOT / "charts" / "claimcheck" / "Chart.yaml").read_text().splitlines():
        if line.startswith("appVersion:"):
            return line.split(":", 1)[1].strip().strip('"')
    raise RuntimeError("charts/claimcheck/Chart.yaml has no appVersion")


@dataclasses.dataclass(frozen=True)
class Settings:
    cluster: str = "claimcheck"
    node_image: str = NODE_IMAGE
    namespace: str = "claimcheck"
    image_tag: str = ""
    skip_build: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(cluster=env.get("KIND_CLUSTER_NAME") or "claimcheck",
                   node_image=env.get("KIND_NODE_IMAGE") or NODE_IMAGE,
                   namespace=env.get("CLAIMCHECK_NAMESPACE") or "claimcheck",
                   image_tag=env.get("CLAIMCHECK_IMAGE_TAG") or app_version(),
                   skip_build=env.get("SKIP_BUILD") == "1")

    @property
    def image(self) -> str:
        return f"claimcheck:{self.image_tag or app_version()}"

    @property
    def context(self) -> str:
        return f"kind-{self.cluster}"


@dataclasses.dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def unusable_reason() -> str | None:
    """Why kind cannot run here (None: it can)."""
    for tool in ("docker", "kind"):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60, check=False)
    if info.returncode != 0:
        return "the Docker engine is not usable (`docker info` failed)"
    return None


def log(message: str) -> None:
    print(f"==> {message}", flush=True)


class Stack:
    """A kind cluster with both charts: ``KindCluster`` plus helm."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        kind = shutil.which("kind")
        if kind is None:
            raise RuntimeError("kind is not installed (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)")
        state = TOOLS / "kind" / settings.cluster
        state.mkdir(parents=True, exist_ok=True)
        with _cwd(TOOLS):  # KindCluster keeps its files under ./.pytest-kind: inside .tools, which git ignores
            self.cluster = KindCluster(settings.cluster, kubeconfig=state / "kubeconfig", image=settings.node_image,
                                       kind_path=Path(kind), kubectl_path=_kubectl())

    @property
    def kubeconfig(self) -> Path:
        return Path(self.cluster.kubeconfig_path)

    # -- tools -----------------------------------------------------------------------------
    def kubectl(self, *args: str, namespaced: bool = True, check: bool = True, timeout: float = 600) -> Result:
        """``kubectl`` through ``KindCluster.kubectl`` (in the release namespace unless ``namespaced=False``)."""
        full = ["-n", self.settings.namespace, *args] if namespaced else list(args)
        try:
            out = self.cluster.kubectl(*full, stderr=subprocess.PIPE, timeout=timeout)
            return Result(0, out, "")
        except subprocess.CalledProcessError as exc:
            if check:
                raise RuntimeError(f"kubectl {' '.join(full)} failed ({exc.returncode}): {exc.stderr}") from exc
            return Result(exc.returncode, exc.output or "", exc.stderr or "")

    def helm(self, *args: str, timeout: float = 1200) -> Result:
        result = subprocess.run([str(HELM), "--kubeconfig", str(self.kubeconfig), "--namespace", self.settings.namespace,
                                 *args], capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return Result(0, result.stdout, result.stderr)

    @contextlib.contextmanager
    def port_forward(self, target: str, remote_port: int) -> Iterator[int]:
        """``KindCluster.port_forward`` in the release namespace; yields the local port."""
        with self.cluster.port_forward(target, remote_port, "-n", self.settings.namespace) as port:
            yield port

    # -- the stack ---------------------------------------------------------------------------
    def exists(self) -> bool:
        out = subprocess.run([str(self.cluster.kind_path), "get", "clusters"], capture_output=True, text=True,
                             timeout=60, check=True).stdout
        return self.settings.cluster in out.split()

    def create(self, export_default_kubeconfig: bool = False) -> None:
        kind = str(self.cluster.kind_path)
        if self.exists():
            log(f"reusing kind cluster {self.settings.cluster}")
            # KindCluster.create() reads its kubeconfig; a reused cluster's must be written first.
            subprocess.run([kind, "export", "kubeconfig", "--name", self.settings.cluster,
                            "--kubeconfig", str(self.kubeconfig)], check=True, capture_output=True, timeout=120)
        else:
            log(f"creating kind cluster {self.settings.cluster} ({self.settings.node_image})")
        self.cluster.create(config_file=ROOT / "kind-config.yaml")
        if export_default_kubeconfig:  # so `kubectl --context kind-<name>` works for the person who ran it
            subprocess.run([kind, "export", "kubeconfig", "--name", self.settings.cluster], check=True,
                           capture_output=True, timeout=120)
        self.kubectl("wait", "--for=condition=Ready", "nodes", "--all", "--timeout=300s", namespaced=False, timeout=330)

    def load_image(self) -> None:
        image = self.settings.image
        if not self.settings.skip_build:
            log(f"building {image}")
            subprocess.run(["docker", "build", "--quiet", "-f", str(ROOT / "images" / "Dockerfile"), "-t", image, str(ROOT)],
                           check=True, stdout=subprocess.DEVNULL, timeout=1800)
        log(f"loading {image} into the cluster")
        self.cluster.load_docker_image(image)

    def install(self) -> None:
        ns = self.settings.namespace
        log("installing claimcheck-infra (RabbitMQ rmq-0..2, HAProxy, MinIO, PostgreSQL)")
        self.helm("upgrade", "--install", INFRA_RELEASE, str(ROOT / "charts" / "claimcheck-infra"), "--create-namespace",
                  "-f", str(ROOT / "scripts" / "kind-infra-values.yaml"), "--wait", "--timeout", "15m")
        self.kubectl("rollout", "status", "statefulset/rmq", "--timeout=10m", timeout=660)
        self.kubectl("wait", "--for=condition=Ready", "pod", "-l",
                     f"app.kubernetes.io/instance={INFRA_RELEASE},app.kubernetes.io/component=rabbitmq",
                     "--timeout=10m", timeout=660)
        for workload in (f"deployment/{INFRA_RELEASE}-haproxy", f"statefulset/{INFRA_RELEASE}-minio",
                         f"statefulset/{INFRA_RELEASE}-postgresql"):
            self.kubectl("rollout", "status", workload, "--timeout=5m", timeout=330)
        log("installing claimcheck (coordinator, operator, ClaimCheckJob CRD)")
        repository, _, tag = self.settings.image.partition(":")
        with self.pointer_keys_values() as keys:
            self.helm("upgrade", "--install", APP_RELEASE, str(ROOT / "charts" / "claimcheck"),
                      "-f", str(ROOT / "scripts" / "kind-app-values.yaml"), *keys, "--set", f"image.repository={repository}",
                      "--set-string", f"image.tag={tag}", "--wait", "--timeout", "10m")
        self.kubectl("wait", "--for=condition=Established", "crd/claimcheckjobs.claimcheck.io", "--timeout=2m",
                     namespaced=False, timeout=150)
        for workload in ("deployment/claimcheck-coordinator", "deployment/claimcheck-operator"):
            self.kubectl("rollout", "status", workload, "--timeout=5m", timeout=330)
        log(f"claimcheck is running in kind cluster {self.settings.cluster}, namespace {ns}")

    @contextlib.contextmanager
    def pointer_keys_values(self) -> Iterator[list[str]]:
        """``-f <file>`` with new Ed25519 pointer keys on the first install, nothing afterwards.

        The chart cannot make an Ed25519 key pair; once installed it keeps the keys of its
        Secrets (lookup), so a second `make kind-up` passes none and changes none. The keys
        go through a private temporary file, never the command line, and the file is removed.
        """
        installed = self.kubectl("get", "secret", f"{APP_RELEASE}-producer", "-o", "name", check=False)
        if installed.returncode == 0:
            yield []
            return
        log("generating the pointer signing keys (claimcheck keys pointer)")
        values = pointer_keys_yaml(generate_pointer_keys())
        state = TOOLS / "kind" / self.settings.cluster
        fd, name = tempfile.mkstemp(prefix="pointer-keys-", suffix=".yaml", dir=state)
        try:
            with os.fdopen(fd, "w") as handle:  # mode 0600 from mkstemp
                handle.write(values)
            yield ["-f", name]
        finally:
            os.unlink(name)

    def up(self, export_default_kubeconfig: bool = False) -> None:
        """Cluster (created or reused), image, both charts (installed or upgraded), all ready."""
        ensure_helm()
        self.create(export_default_kubeconfig)
        self.load_image()
        self.install()

    def down(self) -> None:
        if self.exists():
            self.cluster.delete()
        else:
            print(f"kind-down: no kind cluster named {self.settings.cluster}")


def generate_pointer_keys() -> str:
    """The two lines of `claimcheck keys pointer` (CLAIMCHECK_POINTER_SIGNING_KEY=..., CLAIMCHECK_POINTER_VERIFY_KEYS=...)."""
    cli = Path(sys.executable).parent / "claimcheck"
    command = [str(cli) if cli.exists() else "claimcheck", "keys", "pointer"]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout


def pointer_keys_yaml(output: str) -> str:
    """Values for the app chart from `claimcheck keys pointer`'s output; ValueError if a line is missing."""
    found = {}
    for line in output.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key in ("CLAIMCHECK_POINTER_SIGNING_KEY", "CLAIMCHECK_POINTER_VERIFY_KEYS"):
            found[key] = value.strip()
    if set(found) != {"CLAIMCHECK_POINTER_SIGNING_KEY", "CLAIMCHECK_POINTER_VERIFY_KEYS"}:
        raise ValueError("`claimcheck keys pointer` did not print the lines "
                         "CLAIMCHECK_POINTER_SIGNING_KEY= and CLAIMCHECK_POINTER_VERIFY_KEYS=")
    return (f"signing:\n  pointerSigningKey: {json.dumps(found['CLAIMCHECK_POINTER_SIGNING_KEY'])}\n"
            f"  pointerVerifyKeys: {json.dumps(found['CLAIMCHECK_POINTER_VERIFY_KEYS'])}\n")


def ensure_helm() -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "helm.sh")], check=True, timeout=600)


def _kubectl() -> Path:
    """The pinned kubectl of scripts/helm.sh, else the one on PATH (never a download)."""
    if os.access(KUBECTL, os.X_OK):
        return KUBECTL
    ensure_helm()
    if os.access(KUBECTL, os.X_OK):
        return KUBECTL
    found = shutil.which("kubectl")
    if found:
        return Path(found)
    raise RuntimeError("no kubectl: scripts/helm.sh did not install one")


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    path.mkdir(parents=True, exist_ok=True)
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args not in (["up"], ["down"]):
        print("usage: kind_stack.py up|down", file=sys.stderr)
        return 2
    reason = unusable_reason() if args == ["up"] else (None if shutil.which("kind") else "kind is not installed")
    if reason:
        print(f"kind-{args[0]}: {reason} (https://kind.sigs.k8s.io/, https://docs.docker.com/get-docker/)", file=sys.stderr)
        return 1
    stack = Stack(Settings.from_env())
    if args == ["down"]:
        stack.down()
        return 0
    stack.up(export_default_kubeconfig=True)
    print(ENDPOINTS.format(cluster=stack.settings.cluster, ctx=stack.settings.context, ns=stack.settings.namespace))
    return 0


ENDPOINTS = """
claimcheck is running in kind cluster '{cluster}', namespace '{ns}' (kubectl context {ctx}).

  RabbitMQ UI     http://127.0.0.1:31672     user claimcheck (the administrator: no application pod has it), password:
                  kubectl --context {ctx} -n {ns} get secret rmq-default-user -o jsonpath='{{.data.password}}' | base64 -d
  AMQP (HAProxy)  amqp://127.0.0.1:30672
  MinIO console   http://127.0.0.1:30901     user and password:
                kubectl --context {ctx} -n {ns} get secret claimcheck-infra-minio -o jsonpath='{{.data.rootUser}}' | base64 -d
                kubectl --context {ctx} -n {ns} get secret claimcheck-infra-minio -o jsonpath='{{.data.rootPassword}}' | base64 -d
  MinIO S3 API    http://127.0.0.1:30900
  Coordinator     http://127.0.0.1:30080/readyz
  Prometheus      http://127.0.0.1:30090
  Grafana         http://127.0.0.1:30300     dashboard "claimcheck" (see docs/observability.md)

Next steps:
  kubectl -n {ns} apply -f manifests/claimcheckjob-example.yaml
  kubectl -n {ns} get ccj -w                         # until PHASE is Succeeded
  curl -s http://127.0.0.1:30080/jobs/{ns}.<name>     # published / acked / deleted
  kubectl -n {ns} delete pod rmq-1                   # failover: quorum queues keep going
  make kind-down                                     # delete the cluster
See docs/kubernetes.md for the walkthrough.
"""


if __name__ == "__main__":
    sys.exit(main())
