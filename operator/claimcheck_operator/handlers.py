"""kopf wiring: startup settings, Job creation on create, a level-based observing timer, cleanup on delete.

Handlers are sync: the ``kubernetes`` client and ``urllib`` block, and kopf runs sync
handlers in a thread pool. All decisions are made by the pure modules; this one does I/O.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from claimcheck_operator import GROUP, PLURAL, VERSION, admission, coordinator, kube, metrics, naming
from claimcheck_operator.builders import Owner, build_all
from claimcheck_operator.conditions.base import make
from claimcheck_operator.config import FINALIZER, OperatorConfig, reconcile_interval
from claimcheck_operator.events import transitions
from claimcheck_operator.observe import JobState, Observation, Progress, job_state
from claimcheck_operator.phase import FAILED, TERMINAL
from claimcheck_operator.reconcile import Applied, iso, managed, reconcile
from claimcheck_operator.spec import RunSpec, parse_spec, spec_hash

# How often a failing cleanup is retried before deletion goes on without it.
CLEANUP_RETRIES = 5
CLEANUP_RETRY_DELAY = 10.0


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Settings changed once, before anything is watched."""
    # Our own names for kopf's bookkeeping, so it reads as this operator's in kubectl output.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="claimcheck.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="claimcheck.io", key="last-handled-configuration"
    )
    # One replica, no KopfPeering CRD, and no cluster-wide namespace/CRD scanning: fewer RBAC rules.
    settings.peering.standalone = True
    settings.scanning.disabled = True
    settings.posting.level = logging.INFO
    try:
        config = OperatorConfig.from_env()
        kube.load_client_config()
    except Exception as exc:
        # A wrong setting does not fix itself: stop the operator so the Pod shows the error.
        raise kopf.PermanentError(f"cannot start: {exc}") from exc
    memo["config"] = config
    logger.info("claimcheck operator: image %s (allowlist: %s), recipients %s, Secrets %s-*, coordinator %s%s, "
                "stuck after %gs", config.app_image, ", ".join(config.image_allowlist) or "none",
                ", ".join(config.recipients) or "none", config.secret_prefix, config.coordinator_url,
                "" if config.control_token else " (no CLAIMCHECK_CONTROL_TOKEN: cancelling a run will be refused)",
                config.stuck_after_seconds)


def _namespace(namespace: str | None) -> str:
    """ClaimCheckJob is namespaced; kopf types the namespace as optional for cluster-scoped resources."""
    if not namespace:
        raise kopf.PermanentError("a ClaimCheckJob must have a namespace")
    return namespace


def _config(memo: kopf.Memo) -> OperatorConfig:
    config = memo.get("config")
    return config if isinstance(config, OperatorConfig) else OperatorConfig.from_env()


def _applied(spec: Mapping[str, Any], run: RunSpec) -> Applied:
    return Applied(spec_hash=spec_hash(spec), count=run.producer.count, recipients=tuple(run.recipient_names))


@kopf.on.create(GROUP, VERSION, PLURAL)
def create_jobs(
    body: kopf.Body, spec: kopf.Spec, status: kopf.Status, name: str, namespace: str | None,
    patch: kopf.Patch, memo: kopf.Memo, retry: int, logger: kopf.Logger, **_: Any,
) -> None:
    """Create the consumer Jobs, then the producer Job; safe to run again after a restart."""
    now = iso(_now())
    namespace = _namespace(namespace)
    try:
        run = parse_spec(spec)
    except ValueError as exc:
        # The CRD schema should have rejected it; report instead of retrying forever.
        failed = make("Failed", "True", "InvalidSpec", str(exc), None, now)
        patch.status.update({"phase": FAILED, "conditions": [failed], "completionTime": now})
        kopf.warn(body, reason="InvalidSpec", message=str(exc))
        return
    config = _config(memo)
    refused = admission.refusal(run, config)
    if refused is not None:
        # Not retried: the chart's configuration, not time, decides. No Job is created.
        failed = make("Failed", "True", refused.reason, refused.message, None, now)
        patch.status.update({"phase": FAILED, "conditions": [failed], "completionTime": now})
        kopf.warn(body, reason=refused.reason, message=refused.message)
        logger.warning("refused %s: %s", naming.job_id(namespace, name), refused.message)
        return
    uid = body.metadata.uid or ""
    created: list[str] = []
    for manifest in build_all(Owner(namespace=namespace, name=name), run, config):
        kopf.adopt(manifest, owner=body, nested="spec.template")
        job_name = manifest["metadata"]["name"]
        if kube.create_job(namespace, manifest):
            created.append(job_name)
            continue
        existing = kube.read_job(namespace, job_name)
        if existing is not None and uid not in kube.owner_uids(existing):
            message = (f"Job {job_name} exists but is not owned by this ClaimCheckJob (a leftover of an older one?); "
                       "waiting for it to be deleted")
            if retry == 0:  # one Event, not one per retry
                kopf.warn(body, reason="JobNameTaken", message=message)
            raise kopf.TemporaryError(message, delay=15)
    metrics.RECONCILES.labels("create", "changed" if created else "unchanged").inc()
    patch.status["jobId"] = naming.job_id(namespace, name)
    patch.status["applied"] = _applied(spec, run).to_status()
    if not status.get("startTime"):
        patch.status["startTime"] = now
    if created:
        kopf.info(body, reason="JobsCreated", message=f"created Jobs {', '.join(created)}")
    logger.info("Jobs in place for %s (created now: %s)", naming.job_id(namespace, name), created or "none")


def _observe(namespace: str, name: str, uid: str, applied: Applied, config: OperatorConfig) -> Observation:
    def state(job_name: str) -> JobState:
        job = kube.read_job(namespace, job_name)
        # A same-named Job of another owner is not ours: it counts as missing.
        return job_state(job_name, job if job is not None and uid in kube.owner_uids(job) else None)

    consumers = tuple(state(naming.consumer_job_name(name, r)) for r in applied.recipients)
    producer = state(naming.producer_job_name(name))
    progress: Progress | None = None
    error = ""
    try:
        progress = coordinator.fetch_progress(
            config.coordinator_url, naming.job_id(namespace, name), config.coordinator_timeout_seconds
        )
    except coordinator.CoordinatorError as exc:
        error = str(exc)
    return Observation(producer=producer, consumers=consumers, progress=progress, coordinator_error=error)


@kopf.timer(GROUP, VERSION, PLURAL, interval=reconcile_interval(), initial_delay=0.5)
def observe_run(
    body: kopf.Body, spec: kopf.Spec, status: kopf.Status, name: str, namespace: str | None,
    patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger, **_: Any,
) -> None:
    """Level-based: observe Jobs and coordinator counts, patch status only when it changed."""
    previous: dict[str, Any] = dict(status)
    # The body a timer gets can lag behind our own last status patch (its watch event not yet
    # processed); this operator is the only writer of these keys, so its last write wins.
    written = memo.get("written_status")
    if isinstance(written, dict):
        previous.update(written)
    if previous.get("phase") in TERMINAL:
        metrics.set_phase(namespace or "", name, str(previous["phase"]))
        return
    config = _config(memo)
    namespace = _namespace(namespace)
    applied = Applied.from_status(previous)
    if applied is None:
        try:
            run = parse_spec(spec)
        except ValueError:
            return  # create_jobs reports an invalid spec
        if admission.refusal(run, config) is not None:
            return  # create_jobs reports the refusal; there is nothing to observe
        applied = _applied(spec, run)
    observation = _observe(namespace, name, body.metadata.uid or "", applied, config)
    current = reconcile(previous, applied, spec_hash(spec), observation, _now(), config.stuck_after_seconds)
    metrics.set_phase(namespace, name, current.get("phase"))
    if current == managed(previous):
        metrics.RECONCILES.labels("observe", "unchanged").inc()
        return
    metrics.RECONCILES.labels("observe", "changed").inc()
    patch.status.update(current)
    memo["written_status"] = current
    for event in transitions(previous, current):
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    if current.get("phase") != previous.get("phase"):
        logger.info("phase %s -> %s", previous.get("phase") or "none", current.get("phase"))


@kopf.on.delete(GROUP, VERSION, PLURAL)
def clean_up(
    body: kopf.Body, spec: kopf.Spec, status: kopf.Status, name: str, namespace: str | None,
    memo: kopf.Memo, retry: int, logger: kopf.Logger, **_: Any,
) -> None:
    """Stop the Jobs now (producer first) and ask the coordinator to drop the run's pending objects.

    Garbage collection would remove the Jobs too (they are owned), but only after the
    finalizer is gone; deleting them first stops consumers before their objects are dropped.
    """
    config = _config(memo)
    namespace = _namespace(namespace)
    metrics.set_phase(namespace, name, None)
    metrics.RECONCILES.labels("delete", "changed").inc()
    recipients = list(status.get("applied", {}).get("recipients") or [r.get("name", "") for r in spec.get("recipients") or []])
    uid = body.metadata.uid or ""
    for job_name in [naming.producer_job_name(name), *(naming.consumer_job_name(name, r) for r in recipients if r)]:
        existing = kube.read_job(namespace, job_name)
        if existing is None:
            continue
        if not kube.owned(existing, uid, naming.ownership_labels(name)):
            # A same-named Job this resource did not create: someone else's, left alone.
            logger.info("left Job %s alone: not owned by this ClaimCheckJob", job_name)
            continue
        if kube.delete_job(namespace, job_name, (existing.get("metadata") or {}).get("uid", "")):
            logger.info("deleted Job %s", job_name)
    if status.get("phase") == "Succeeded":
        return  # everything of the run is already deleted
    if any(c.get("type") == "Failed" and c.get("reason") in admission.REASONS for c in status.get("conditions") or []):
        return  # refused before anything ran: nothing was published under this job id
    job = naming.job_id(namespace, name)
    try:
        outcome = coordinator.forget_job(config.coordinator_url, job, config.coordinator_timeout_seconds,
                                         config.control_token)
    except coordinator.CoordinatorError as exc:
        if retry < CLEANUP_RETRIES:
            raise kopf.TemporaryError(f"{exc}; will retry", delay=CLEANUP_RETRY_DELAY) from None
        kopf.warn(body, reason="CleanupIncomplete",
                  message=f"could not ask the coordinator to drop job {job} ({exc}); its pending objects may remain")
        return
    logger.info("asked the coordinator to drop job %s: %s", job, outcome)
