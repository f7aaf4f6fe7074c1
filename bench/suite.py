"""The five measurements of issue 7, and the profile, as functions of a configuration."""

import contextlib
import logging
import os
import platform
import signal
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import passes, profiling
from bench.coordbench import CoordinatorBench
from bench.memory import Memory
from bench.pipeline import Pipeline, Run
from bench.relief import Relief
from bench.stack import (
    BROKER_DEFAULT_MAX_MESSAGE_SIZE,
    PYTHON,
    REPO,
    BenchEnv,
    broker_max_message_size,
    broker_settings,
    wait_healthy,
)
from bench.stats import size_label

log = logging.getLogger("bench")
KiB, MiB, GiB = 1024, 1024 * 1024, 1024 * 1024 * 1024


@dataclass
class Config:
    full: bool = False
    repeats: int = 3
    # payload size -> objects per repetition (size sweep, 2 recipient groups)
    sizes: dict[int, int] = field(default_factory=lambda: {
        64 * KiB: 150, 256 * KiB: 100, 1 * MiB: 100, 4 * MiB: 40, 16 * MiB: 16, 64 * MiB: 6})
    headline_sizes: tuple[int, ...] = (64 * KiB, 1 * MiB, 16 * MiB)
    latency_seconds: float = 3.0  # length of each offered-load run
    offered_load: float = 0.5  # fraction of the measured throughput offered in the latency runs
    groups: tuple[int, ...] = (1, 2, 3, 4, 5)
    groups_size: int = 1 * MiB
    groups_count: int = 40
    relief: dict[int, int] = field(default_factory=lambda: {64 * KiB: 150, 1 * MiB: 24, 16 * MiB: 3})
    coordinator_objects: int = 2000
    memory_sizes: tuple[int, ...] = (1 * MiB, 16 * MiB, 100 * MiB, 1 * GiB)
    profile: bool = True

    @classmethod
    def for_mode(cls, full: bool, repeats: int | None = None) -> "Config":
        if not full:
            return cls(repeats=repeats or 3)
        return cls(
            full=True,
            repeats=repeats or 5,
            sizes={64 * KiB: 400, 256 * KiB: 300, 1 * MiB: 300, 4 * MiB: 80, 16 * MiB: 24, 64 * MiB: 8},
            latency_seconds=10.0,
            groups_count=120,
            relief={64 * KiB: 800, 1 * MiB: 96, 16 * MiB: 8},
            coordinator_objects=5000,
            memory_sizes=(1 * MiB, 16 * MiB, 100 * MiB, 1 * GiB),
        )


def _load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def foreign_processes() -> int:
    """claimcheck or pytest processes on this machine that this benchmark did not start."""
    mine = {os.getpid()}
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in mine:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        if ("-m claimcheck" in cmdline or "pytest" in cmdline) and parent != os.getpid() and "ccbench" not in cmdline:
            count += 1
    return count


RETRIES = 2


def attempt(measure: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one measurement on a whole stack; repeat it (at most RETRIES times) when it failed, which on
    this shared stack means another user stopped RabbitMQ, PostgreSQL or S3 in the middle of it. The
    result records how many attempts failed before it."""
    failures: list[str] = []
    while True:
        waited = wait_healthy()
        result = measure(*args, **kwargs)
        error = result.get("error") if isinstance(result, dict) else getattr(result, "error", "")
        if not error or len(failures) >= RETRIES:
            break
        log.warning("measurement failed, repeating it: %s", str(error)[:200])
        failures.append(str(error)[:300])
    note = {"failed_attempts": failures, "waited_for_stack": waited}
    if isinstance(result, dict):
        result.update(note)
    else:
        result.failed_attempts = failures
    return result


def context() -> dict[str, Any]:
    """Load and other users of the stack at this moment: how noisy the measurement was."""
    return {"loadavg": _load(), "foreign_processes": foreign_processes(), "time": time.time()}


# -- 1 and 5: pipeline against the stack's limit -------------------------------------------


def _object_size(runs: list[Run]) -> int:
    sizes = [run.object_bytes // run.count for run in runs if run.object_bytes and not run.error]
    return int(statistics.median(sizes)) if sizes else 0


def size_sweep(env: BenchEnv, pipeline: Pipeline, config: Config) -> list[dict[str, Any]]:
    """Every size with 2 groups: pipeline and limit interleaved, the per-byte passes, then offered-load latency runs."""
    results = []
    # CPU the limit's three processes spend starting up, to take out of its CPU per object.
    # A failed measurement leaves it unknown (None), and the report then shows no ceiling.
    startups = [run.cpu["limit (all processes)"] for run in
                (attempt(pipeline.limit, 64 * KiB, 2, 2, 48 * KiB) for _ in range(config.repeats)) if not run.error]
    startup = statistics.median(startups) if startups else None
    for size, count in config.sizes.items():
        log.info("size sweep: %s x %d, %d repetitions", size_label(size), count, config.repeats)
        entry: dict[str, Any] = {"size": size, "count": count, "groups": 2, "pipeline": [], "limit": [],
                                 "latency": [], "context": [context()], "limit_startup_cpu": startup}
        pipe_runs: list[Run] = []
        for rep in range(config.repeats):
            run = attempt(pipeline.run, size, count, 2, broker_commands=size in config.headline_sizes)
            pipe_runs.append(run)
            entry["pipeline"].append(run.as_dict())
            object_size = _object_size(pipe_runs) or int(size * 0.76)
            entry["limit"].append(attempt(pipeline.limit, size, count, 2, object_size).as_dict())
            log.info("  rep %d: pipeline %.1f obj/s, limit %.1f obj/s", rep + 1, run.objects_per_s,
                     entry["limit"][-1]["objects_per_s"])
        # The product's per-byte work on payloads of this size, for the extended ceiling (bench/passes.py).
        entry["per_byte"] = passes.measure(size, config.repeats)
        if size in config.headline_sizes:
            rates = [run.objects_per_s for run in pipe_runs if not run.error and run.objects_per_s == run.objects_per_s]
            if rates:
                rate = config.offered_load * statistics.median(rates)
                latency_count = max(8, min(4 * count, round(rate * config.latency_seconds)))
                for _ in range(config.repeats):
                    entry["latency"].append(attempt(pipeline.run, size, latency_count, 2, rate=rate).as_dict())
                entry["offered_rate"] = rate
        entry["context"].append(context())
        results.append(entry)
    return results


def groups_sweep(env: BenchEnv, pipeline: Pipeline, config: Config) -> list[dict[str, Any]]:
    results = []
    for groups in config.groups:
        log.info("groups sweep: %d groups x %s", groups, size_label(config.groups_size))
        entry: dict[str, Any] = {"size": config.groups_size, "count": config.groups_count, "groups": groups,
                                 "pipeline": [], "limit": [], "context": [context()]}
        runs: list[Run] = []
        for _ in range(config.repeats):
            run = attempt(pipeline.run, config.groups_size, config.groups_count, groups)
            runs.append(run)
            entry["pipeline"].append(run.as_dict())
            object_size = _object_size(runs) or int(config.groups_size * 0.76)
            entry["limit"].append(attempt(pipeline.limit, config.groups_size, config.groups_count, groups,
                                          object_size).as_dict())
        entry["context"].append(context())
        results.append(entry)
    return results


# -- 2: broker relief ---------------------------------------------------------------------


def relief(env: BenchEnv, config: Config) -> dict[str, Any]:
    bench = Relief(env)
    runs = []
    with broker_max_message_size(BROKER_DEFAULT_MAX_MESSAGE_SIZE):
        for size, count in config.relief.items():
            log.info("broker relief: %s x %d", size_label(size), count)
            for rep in range(config.repeats):
                modes = ("inline", "pointer") if rep % 2 == 0 else ("pointer", "inline")
                for mode in modes:
                    runs.append(attempt(bench.measure, mode, size, count) | {"rep": rep})
        log.info("broker relief: max message size probe")
        return {"runs": runs, "max_message": bench.max_message_probe()}


# -- 3: coordinator -----------------------------------------------------------------------


# The scale-out check: the same drain with this many shards, a coordinator process each.
SHARDS = 2


def coordinator(env: BenchEnv, config: Config) -> dict[str, Any]:
    bench = CoordinatorBench(env, config.coordinator_objects)
    sharded = CoordinatorBench(env, config.coordinator_objects, shards=SHARDS)
    log.info("coordinator: filling with %d objects through the product, with 1 and %d shards",
             config.coordinator_objects, SHARDS)
    wait_healthy()
    bench.harvest()
    sharded.harvest()
    drains, sharded_drains = [], []
    for rep in range(config.repeats):  # alternating, so both see the same machine
        drains.append(attempt(bench.drain, rep) | {"context": context()})
        sharded_drains.append(attempt(sharded.drain, rep) | {"context": context()})
        log.info("  drain %d: %.0f ACKs/s (%d shards: %.0f), baseline %.0f upserts/s", rep + 1,
                 drains[-1].get("acks_per_s", 0), SHARDS, sharded_drains[-1].get("acks_per_s", 0),
                 drains[-1].get("upserts_per_s", 0))
    result: dict[str, Any] = {"objects": config.coordinator_objects, "fill_seconds": bench.fill_seconds,
                              "drains": drains,
                              "sharded": {"shards": SHARDS, "fill_seconds": sharded.fill_seconds, "drains": sharded_drains}}
    if config.profile and profiling.available():
        result["profile"] = _profile_drain(env, bench)
    return result


def _profile_drain(env: BenchEnv, bench: CoordinatorBench) -> dict[str, Any]:
    """One more drain with py-spy sampling the coordinator (not counted in the results)."""
    out = env.workdir / "profile-coordinator.raw"
    drained = bench.drain(99, profile_out=out)
    return {"coordinator": dict(profiling.read_raw(out)), "drain": drained}


# -- 4: memory ----------------------------------------------------------------------------


def memory(env: BenchEnv, config: Config) -> list[dict[str, Any]]:
    bench = Memory(env)
    runs = []
    for size in config.memory_sizes:
        log.info("memory: %s", size_label(size))
        for _ in range(config.repeats):
            runs.append(attempt(bench.measure, size))
    return runs


# -- profile of the pipeline --------------------------------------------------------------


def profile_pipeline(env: BenchEnv, pipeline: Pipeline, sizes: tuple[int, ...] = (64 * KiB, 1 * MiB, 16 * MiB),
                     counts: tuple[int, ...] = (40, 24, 4)) -> dict[str, Any]:
    """Untimed pipeline runs with py-spy on every product process; samples per category."""
    profiles: dict[str, Any] = {}
    for size, count in zip(sizes, counts, strict=True):
        label = size_label(size)
        log.info("profile: pipeline %s x %d under py-spy", label, count)
        targets = {"coordinator": pipeline.coordinator, "consumer": pipeline.consumers[0]}
        outs = {name: env.workdir / f"profile-{name}-{size}.raw" for name in ("producer", *targets)}
        spies = {name: profiling.attach(proc.pid, outs[name]) for name, proc in targets.items() if proc is not None}
        time.sleep(1.0)
        job = f"{env.run_id}-profile-{size}"
        producer = env.spawn(f"profile-producer-{size}", [
            *profiling.record_command(outs["producer"]), PYTHON, "-m", "claimcheck", "producer", "--job", job,
            "--count", str(count), "--size", str(size), "--recipients", ",".join(pipeline.groups[:2]), "--no-verify"],
            pipeline.child_env)
        try:
            producer.wait(600)
            pipeline.wait_deleted(job, count, 600)
        except Exception as exc:  # noqa: BLE001
            log.warning("profiled run failed: %s", exc)
        for spy in spies.values():
            spy.send_signal(signal.SIGINT)
        for spy in spies.values():
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
        time.sleep(0.5)
        profiles[label] = {name: dict(profiling.read_raw(path)) for name, path in outs.items()}
    return profiles


# -- machine ------------------------------------------------------------------------------


def _first_line(args: list[str]) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    mem_total = next((int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")), 0)
    versions = {}
    for package in ("claimcheck", "boto3", "botocore", "pika", "psycopg2-binary", "pydantic", "py-spy", "matplotlib"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    commit = _first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "apps"],
                                capture_output=True, text=True, check=False).stdout.strip())
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_bytes": mem_total,
        "kernel": platform.release(),
        "os": _first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "python": platform.python_version(),
        "packages": versions,
        "postgresql": _first_line(["/usr/lib/postgresql/15/bin/postgres", "--version"]),
        "seaweedfs": _first_line([str(Path(PYTHON).with_name("weed")), "version"]),
        "git_commit": commit + (" + uncommitted changes in apps/" if dirty else ""),
    }
    try:
        info["broker"] = broker_settings()
    except OSError as exc:
        info["broker"] = {"error": str(exc)}
    return info
