"""Render the results JSON as docs/benchmarks.md and PNG plots (matplotlib, Agg backend)."""

import datetime
import math
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend

from bench import profiling  # noqa: E402
from bench.stats import fmt, fmt_summary, percentile, summary  # noqa: E402

MiB = 1024 * 1024
KiB = 1024
COMPONENTS = ("producer", "consumers", "coordinator", "rabbitmq", "postgresql", "seaweedfs")
COLORS = {"producer": "#1f77b4", "consumers": "#ff7f0e", "coordinator": "#2ca02c", "rabbitmq": "#d62728",
          "postgresql": "#9467bd", "seaweedfs": "#8c564b"}


def size_label(size: int) -> str:
    for unit, factor in (("GiB", MiB * 1024), ("MiB", MiB), ("KiB", KiB)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} B"


def _ok(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [run for run in runs if not run.get("error")]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not math.isnan(value)


def _rates(runs: list[dict[str, Any]], key: str = "objects_per_s") -> list[float]:
    return [run[key] for run in runs if not run.get("error") and _finite(run.get(key))]


def _paired_ratios(entry: dict[str, Any], key: str = "objects_per_s") -> list[float]:
    """Pipeline over limit, repetition by repetition (they ran back to back)."""
    pairs = zip(entry.get("pipeline", []), entry.get("limit", []), strict=False)
    return [pipe[key] / limit[key] for pipe, limit in pairs
            if not pipe.get("error") and not limit.get("error") and _finite(pipe.get(key)) and _finite(limit.get(key))
            and limit[key]]


def _latency(runs: list[dict[str, Any]], key: str, q: float) -> list[float]:
    return [percentile(run[key], q) for run in _ok(runs) if run.get(key)]


def _cpu_per_object(runs: list[dict[str, Any]], component: str) -> float:
    values = [run["cpu"].get(component, 0.0) / run["count"] for run in _ok(runs) if run.get("cpu")]
    return statistics.median(values) if values else math.nan


def _ceilings(entry: dict[str, Any], cores: int) -> list[tuple[float, float, float, float]]:
    """Per repetition: (B, L, limit cores busy, ceiling) as _ceiling_lines explains; B and L in CPU s/object."""
    startup = entry.get("limit_startup_cpu")
    out = []
    for pipe, limit in zip(entry.get("pipeline", []), entry.get("limit", []), strict=False):
        if (startup is None or pipe.get("error") or limit.get("error") or not pipe.get("cpu")
                or not _finite(limit.get("objects_per_s"))):
            continue
        extra = (pipe["cpu"].get("rabbitmq", 0.0) + pipe["cpu"].get("postgresql", 0.0)) / pipe["count"]
        busy = max(0.0, sum(limit["cpu"].values()) - startup) / limit["count"] * limit["objects_per_s"]
        own = min(busy, cores) / limit["objects_per_s"]  # above `cores` is accounting noise, see _ceiling_lines
        out.append((extra, own, busy, cores / (own + extra) / limit["objects_per_s"]))
    return out


def _ms(values: list[float]) -> str:
    return fmt_summary(values, 3, 1000)


def _mib(value: float) -> str:
    return fmt(value / MiB, 3) if _finite(value) else "n/a"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


# -- plots ------------------------------------------------------------------------------------


def _errorbar(ax: Any, xs: list[float], series: list[list[float]], label: str, **kwargs: Any) -> None:
    points = [(x, summary(values)) for x, values in zip(xs, series, strict=True) if summary(values)["n"]]
    if not points:
        return
    x = [p[0] for p in points]
    med = [p[1]["median"] for p in points]
    low = [p[1]["median"] - p[1]["min"] for p in points]
    high = [p[1]["max"] - p[1]["median"] for p in points]
    ax.errorbar(x, med, yerr=[low, high], marker="o", capsize=3, label=label, **kwargs)


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def plot_sizes(sizes: list[dict[str, Any]], out: Path, cores: int) -> str:
    xs = [entry["size"] / MiB for entry in sizes]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    ax = axes[0][0]
    _errorbar(ax, xs, [_rates(e["pipeline"], "mib_per_s") for e in sizes], "claimcheck pipeline")
    _errorbar(ax, xs, [[r["objects_per_s"] * r["size"] / MiB for r in _ok(e["limit"]) if _finite(r["objects_per_s"])]
                       for e in sizes], "stack limit (S3 only)", linestyle="--")
    ax.set(xscale="log", yscale="log", xlabel="payload size (MiB)", ylabel="payload MiB/s",
           title="Throughput, 2 recipient groups")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    ax = axes[0][1]
    _errorbar(ax, xs, [[100 * r for r in _paired_ratios(e)] for e in sizes], "pipeline / limit")
    bounded = [(e, ceiling) for e in sizes if (ceiling := _ceiling_percent(e, cores))]
    if bounded:
        _errorbar(ax, [e["size"] / MiB for e, _ in bounded], [ceiling for _, ceiling in bounded],
                  "ceiling on this machine (broker + ledger CPU)", linestyle="--")
    ax.axhline(80, color="grey", linestyle=":", label="goal 80 %")
    ax.set(xscale="log", xlabel="payload size (MiB)", ylabel="% of the stack limit", title="Share of the limit reached")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    ax = axes[1][0]
    per_mib = {c: [_cpu_per_object(e["pipeline"], c) * 1000 / (e["size"] / MiB) for e in sizes] for c in COMPONENTS}
    per_mib = {c: [v if _finite(v) else 0.0 for v in values] for c, values in per_mib.items()}
    totals = [sum(per_mib[c][i] for c in COMPONENTS) for i in range(len(sizes))]
    bottom = [0.0] * len(sizes)
    for component in COMPONENTS:
        shares = [100 * v / t if t else 0.0 for v, t in zip(per_mib[component], totals, strict=True)]
        ax.bar(range(len(sizes)), shares, bottom=bottom, label=component, color=COLORS[component])
        bottom = [b + v for b, v in zip(bottom, shares, strict=True)]
    for i, total in enumerate(totals):
        ax.text(i, 101, f"{total:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(sizes)), [size_label(e["size"]) for e in sizes])
    ax.set_ylim(0, 112)
    ax.set(ylabel="% of the stack's CPU", title="CPU by process (number on top: CPU ms per payload MiB)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax = axes[1][1]
    _errorbar(ax, xs, [_latency(e["pipeline"], "latency_created", 50) for e in sizes], "p50, flat out")
    _errorbar(ax, xs, [_latency(e["pipeline"], "latency_created", 99) for e in sizes], "p99, flat out", linestyle="--")
    offered = [e for e in sizes if e.get("latency")]
    if offered:
        _errorbar(ax, [e["size"] / MiB for e in offered], [_latency(e["latency"], "latency_seen", 50) for e in offered],
                  "p50 at half load, from publish", linestyle=":")
    ax.set(xscale="log", yscale="log", xlabel="payload size (MiB)", ylabel="seconds",
           title="Publish-to-delete latency (pointer_created_at -> deleted_at)")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, out / "pipeline-sizes.png")


def plot_groups(groups: list[dict[str, Any]], out: Path) -> str:
    xs = [entry["groups"] for entry in groups]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    ax = axes[0]
    _errorbar(ax, xs, [_rates(e["pipeline"]) for e in groups], "claimcheck pipeline")
    _errorbar(ax, xs, [_rates(e["limit"]) for e in groups], "stack limit (S3 only)", linestyle="--")
    ax.set(xlabel="recipient groups", ylabel="objects/s", title=f"Throughput, {size_label(groups[0]['size'])} payloads")
    ax.set_xticks(xs)
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.grid(True, alpha=0.3)
    ax = axes[1]
    _errorbar(ax, xs, [[100 * r for r in _paired_ratios(e)] for e in groups], "pipeline / limit")
    ax.set(xlabel="recipient groups", ylabel="% of the stack limit", title="Share of the limit reached")
    ax.set_xticks(xs)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax = axes[2]
    bottom = [0.0] * len(groups)
    for component in COMPONENTS:
        values = [_cpu_per_object(e["pipeline"], component) * 1000 for e in groups]
        values = [v if _finite(v) else 0.0 for v in values]
        ax.bar(xs, values, bottom=bottom, label=component, color=COLORS[component])
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set(xlabel="recipient groups", ylabel="CPU ms per object", title="CPU per object by process")
    ax.legend(fontsize=8)
    return _save(fig, out / "pipeline-groups.png")


def plot_relief(runs: list[dict[str, Any]], out: Path) -> str:
    sizes = sorted({run["size"] for run in runs})
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    metrics = [("mib_per_s", "payload MiB/s handed over", "Publish throughput", False),
               ("write_bytes", "MiB written by the 3 nodes", "Broker bytes written", True),
               ("rss_growth", "MiB, sum over the 3 nodes", "Broker RSS growth (peak)", True)]
    width = 0.38
    for ax, (key, ylabel, title, is_bytes) in zip(axes, metrics, strict=True):
        for offset, mode, color in ((-width / 2, "inline", "#d62728"), (width / 2, "pointer", "#1f77b4")):
            values = []
            for size in sizes:
                picked = [run[key] / (MiB if is_bytes else 1) for run in runs
                          if run["size"] == size and run["mode"] == mode and not run.get("error") and _finite(run.get(key))]
                values.append(statistics.median(picked) if picked else 0.0)
            ax.bar([i + offset for i in range(len(sizes))], [max(v, 0.01) for v in values], width, label=mode,
                   color=color)
        ax.set_xticks(range(len(sizes)), [size_label(s) for s in sizes])
        ax.set(ylabel=ylabel, title=title)
        if is_bytes:
            ax.set_yscale("log")
        ax.legend()
    return _save(fig, out / "broker-relief.png")


def plot_coordinator(coordinator: dict[str, Any], out: Path) -> str:
    drains = _ok(coordinator["drains"])
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = ["coordinator\nACKs/s", "coordinator\nmessages/s", "baseline\nsingle-row upserts/s"]
    series = [[d["acks_per_s"] for d in drains], [d["messages_per_s"] for d in drains], [d["upserts_per_s"] for d in drains]]
    meds = [statistics.median(s) if s else 0 for s in series]
    ax.bar(labels, meds, color=["#2ca02c", "#98df8a", "#9467bd"],
           yerr=[[m - min(s) if s else 0 for m, s in zip(meds, series, strict=True)],
                 [max(s) - m if s else 0 for m, s in zip(meds, series, strict=True)]], capsize=4)
    ax.axhline(5000, color="grey", linestyle=":", label="goal 5,000 ACKs/s")
    ax.set(ylabel="per second", title=f"Coordinator drain of {coordinator['objects']} objects (2 ACKs each)")
    ax.legend()
    return _save(fig, out / "coordinator.png")


def plot_memory(runs: list[dict[str, Any]], out: Path) -> str:
    sizes = sorted({run["size"] for run in runs})
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [s / MiB for s in sizes]
    for key, label in (("producer_rss", "producer"), ("consumer_rss", "consumer")):
        _errorbar(ax, xs, [[r[key] / MiB for r in _ok(runs) if r["size"] == s and key in r] for s in sizes], label)
    ax.axhline(150, color="grey", linestyle=":", label="goal 150 MiB")
    ax.set(xscale="log", xlabel="payload size (MiB)", ylabel="peak RSS (MiB)", title="Peak RSS (ru_maxrss)")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, out / "memory.png")


def _shares(counts: dict[str, int]) -> dict[str, float]:
    busy = {key: value for key, value in counts.items() if key != profiling.IDLE}
    total = sum(busy.values())
    return {key: value / total for key, value in busy.items()} if total else {}


def plot_profile(profile: dict[str, Any], coordinator_profile: dict[str, int] | None, out: Path) -> str:
    rows: list[tuple[str, dict[str, float]]] = []
    for label, processes in profile.items():
        for name, counts in processes.items():
            rows.append((f"{name}, {label}", _shares(counts)))
    if coordinator_profile:
        rows.append(("coordinator, ACK drain", _shares(coordinator_profile)))
    categories = sorted({c for _, shares in rows for c in shares},
                        key=lambda c: -sum(shares.get(c, 0) for _, shares in rows))
    cmap = plt.get_cmap("tab20")
    fig, ax = plt.subplots(figsize=(12, 0.45 * len(rows) + 2.5))
    for index, (_label, shares) in enumerate(rows):
        left = 0.0
        for ci, category in enumerate(categories):
            value = shares.get(category, 0.0) * 100
            ax.barh(index, value, left=left, color=cmap(ci % 20), label=category if index == 0 else None)
            left += value
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.invert_yaxis()
    ax.set(xlabel="% of busy CPU samples (py-spy --native)", title="Where each process spends its CPU")
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(ci % 20)) for ci in range(len(categories))]
    ax.legend(handles, categories, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return _save(fig, out / "profile.png")


# -- the document -----------------------------------------------------------------------------


def _goal(met: bool | None) -> str:
    return "n/a" if met is None else ("**met**" if met else "**not met**")


def write(results: dict[str, Any], doc: Path, plots: Path) -> None:
    plots.mkdir(parents=True, exist_ok=True)
    machine = results.get("machine", {})
    lines: list[str] = [
        "# Benchmarks",
        "",
        "How fast the claim-check path is on the local stack, against the limit of that stack and against "
        "sending the payloads inline. Generated by `bench/` (do not edit by hand; re-run it). "
        f"Run `{results.get('run_id')}`, mode **{results.get('mode')}**, "
        f"{results.get('repeats')} repetitions per measurement, "
        f"{fmt(results.get('seconds', 0) / 60, 2)} minutes, "
        f"{datetime.datetime.fromtimestamp(results.get('context_start', {}).get('time', 0), datetime.UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        "Numbers are `median (min–max)` over the repetitions. Every ratio is computed repetition by "
        "repetition from two measurements taken back to back in the same run, because this machine is noisy.",
        "",
    ]
    retried = _count_retries(results)
    if retried:
        lines += [f"{retried} measurement attempts failed because another user of the shared stack stopped RabbitMQ, "
                  "PostgreSQL or S3 in the middle of them; each was repeated once the stack was whole again "
                  "(`failed_attempts` in the results).", ""]
    lines += _summary_section(results)
    lines += _machine_section(results, machine)
    if "sizes" in results:
        lines += _pipeline_section(results["sizes"], plots, results.get("machine", {}).get("cores") or 1)
    if "relief" in results:
        lines += _relief_section(results["relief"], plots)
    if "coordinator" in results:
        lines += _coordinator_section(results["coordinator"], plots)
    if "memory" in results:
        lines += _memory_section(results["memory"], plots)
        lines += _pipeline_rss(results.get("sizes", []))
    if "sizes" in results or "groups" in results:
        lines += _scaling_section(results, plots)
    if "profile" in results or results.get("coordinator", {}).get("profile"):
        lines += _profile_section(results, plots)
    lines += _method_section(results)
    doc.write_text("\n".join(lines).rstrip() + "\n")


def _count_retries(node: Any) -> int:
    if isinstance(node, dict):
        return len(node.get("failed_attempts") or []) + sum(_count_retries(v) for v in node.values())
    if isinstance(node, list):
        return sum(_count_retries(v) for v in node)
    return 0


def _entry(results: dict[str, Any], size: int) -> dict[str, Any] | None:
    return next((e for e in results.get("sizes", []) if e["size"] == size), None)


def _summary_section(results: dict[str, Any]) -> list[str]:
    rows = []
    one = _entry(results, MiB)
    if one:
        ratios = _paired_ratios(one)
        met = statistics.median(ratios) >= 0.8 if ratios else None
        rows.append(["full pipeline ≥ 80 % of the stack limit, 1 MiB, 2 groups",
                     fmt_summary([100 * r for r in ratios], 3) + " %", _goal(met)])
        ceilings = _ceiling_percent(one, results.get("machine", {}).get("cores") or 1)
        if ceilings:
            rows.append(["… the most this machine allows if producer, consumers and coordinator cost no CPU "
                         "(section 1)", fmt_summary(ceilings, 3) + " %", ""])
    coordinator = results.get("coordinator")
    if coordinator:
        drains = _ok(coordinator["drains"])
        acks = [d["acks_per_s"] for d in drains]
        ratios = [d["acks_per_s"] / d["upserts_per_s"] for d in drains]
        rows.append(["coordinator ≥ 5,000 ACKs/s", fmt_summary(acks, 3) + " ACKs/s",
                     _goal(statistics.median(acks) >= 5000 if acks else None)])
        rows.append(["coordinator above the single-row upsert baseline", fmt_summary(ratios, 3) + " × baseline",
                     _goal(statistics.median(ratios) > 1 if ratios else None)])
    memory = results.get("memory")
    if memory:
        peaks = [max(r.get("producer_rss", 0), r.get("consumer_rss", 0)) for r in _ok(memory)]
        sizes = sorted({r["size"] for r in _ok(memory)})
        pipeline_peaks = {e["size"]: max((r.get("producer_rss", 0) for r in _ok(e["pipeline"])), default=0)
                          for e in results.get("sizes", [])}
        worst = max(pipeline_peaks.items(), key=lambda item: item[1], default=(0, 0))
        measured = f"highest {_mib(max(peaks)) if peaks else 'n/a'} MiB"
        if worst[1]:
            measured += f"; producer in the section 1 runs: up to {_mib(worst[1])} MiB at {size_label(worst[0])}"
        everything = peaks + [worst[1]]
        rows.append([f"peak RSS of producer and consumer < 150 MiB ({', '.join(size_label(s) for s in sizes)}, "
                     "and the producers of section 1)", measured, _goal(max(everything) < 150 * MiB if peaks else None)])
    relief = results.get("relief")
    if relief:
        for size in sorted({r["size"] for r in relief["runs"]}):
            inline, pointer = ([r["write_bytes"] for r in _ok(relief["runs"]) if r["size"] == size and r["mode"] == mode]
                               for mode in ("inline", "pointer"))
            if inline and pointer and statistics.median(pointer) > 0:
                rows.append([f"broker bytes written, inline ÷ pointer, {size_label(size)}",
                             f"{fmt(statistics.median(inline) / max(statistics.median(pointer), 1), 3)} ×", ""])
    if not rows:
        return []
    return ["## Headline", ""] + _table(["goal / comparison", "measured", "status"], rows)


def _machine_section(results: dict[str, Any], machine: dict[str, Any]) -> list[str]:
    broker = machine.get("broker", {})
    packages = machine.get("packages", {})
    start, end = results.get("context_start", {}), results.get("context_end", {})
    lines = ["## Machine and stack", ""]
    lines += _table(["what", "value"], [
        ["CPU", f"{machine.get('cpu')} × {machine.get('cores')} cores"],
        ["memory", f"{_mib(machine.get('memory_bytes', 0))} MiB"],
        ["OS, kernel", f"{machine.get('os')}, {machine.get('kernel')}"],
        ["Python", machine.get("python", "")],
        ["packages", ", ".join(f"{k} {v}" for k, v in packages.items())],
        ["RabbitMQ", f"{broker.get('rabbitmq_version')} on Erlang {broker.get('erlang_version')}, {broker.get('nodes')} nodes "
                     "behind HAProxy, memory high watermark "
                     f"{', '.join(_mib(v) for v in broker.get('mem_limit_bytes', []) or [])} MiB per node, "
                     f"max_message_size {_mib(broker.get('max_message_size_bytes') or math.nan)} MiB"],
        ["PostgreSQL", machine.get("postgresql", "")],
        ["S3", f"SeaweedFS ({machine.get('seaweedfs')})"],
        ["code", f"git {machine.get('git_commit')}"],
        ["load average (1, 5, 15 min) at start / end", f"{start.get('loadavg')} / {end.get('loadavg')}"],
        ["other claimcheck/pytest processes at start / end",
         f"{start.get('foreign_processes')} / {end.get('foreign_processes')}"],
    ])
    lines += ["Everything runs on this one machine: three RabbitMQ nodes, HAProxy, PostgreSQL, SeaweedFS and the "
              "benchmarked processes share its cores. Other users of the shared local stack (test suites) add noise; "
              "the load figures above say how much there was.", ""]
    return lines


def _pipeline_section(sizes: list[dict[str, Any]], plots: Path, cores: int) -> list[str]:
    lines = ["## 1. Pipeline throughput against the limit of the stack", "",
             "Two recipient groups (one consumer replica each, 4 workers), one coordinator, producer with "
             "`--parallelism 2`. *Limit*: the same objects with one S3 PUT, two GETs and one DELETE each, "
             "same client settings and concurrency, no broker, no ledger, no gzip, no hashing "
             "(`bench/s3limit.py`). Latency is `deleted_at - pointer_created_at` per object.", ""]
    rows = []
    for entry in sizes:
        pipe, limit = entry["pipeline"], entry["limit"]
        latency = entry.get("latency", [])
        rows.append([
            size_label(entry["size"]), str(entry["count"]),
            fmt_summary(_rates(pipe)), fmt_summary(_rates(pipe, "mib_per_s")),
            fmt_summary(_rates(limit)),
            fmt_summary([100 * r for r in _paired_ratios(entry)]) + " %",
            _ms(_latency(pipe, "latency_created", 50)) + " / " + _ms(_latency(pipe, "latency_created", 99)),
            (_ms(_latency(latency, "latency_created", 50)) + " / " + _ms(_latency(latency, "latency_created", 99))
             + " — " + _ms(_latency(latency, "latency_seen", 50)) + " / " + _ms(_latency(latency, "latency_seen", 99))
             + f" at {fmt(entry['offered_rate'], 3)}/s") if latency and entry.get("offered_rate") else "–",
            _ms(_latency(limit, "latency_created", 50)),
        ])
        errors = [run["error"] for run in pipe + limit + latency if run.get("error")]
        if errors:
            rows[-1][0] += f" ({len(errors)} failed runs)"
    lines += _table(["payload", "objects/run", "pipeline objects/s", "pipeline MiB/s", "limit objects/s",
                     "pipeline ÷ limit", "latency p50 / p99 ms, flat out",
                     "latency p50 / p99 ms at offered load: from pointer creation — from publish", "limit latency p50 ms"],
                    rows)
    plot = plot_sizes(sizes, plots, cores)
    lines += [f"![throughput, share of the limit, CPU per MiB and latency by payload size](bench/{plot})", ""]
    lines += _ceiling_lines(sizes, cores)
    lines += ["*Flat out*: the producer publishes as fast as it can, so latency includes queueing behind earlier "
              "objects. *Offered load*: `claimcheck producer --rate` at half the measured throughput. The producer "
              "paces publishes, not uploads, so `pointer_created_at` is taken when the upload finished and the pointer "
              "then waits for its publish slot; the second pair measures from `pointer_seen_at` (the coordinator's copy of "
              "the pointer arriving), which is the publish-to-delete latency proper.", ""]
    return lines


def _ceiling_percent(entry: dict[str, Any], cores: int) -> list[float]:
    """The ceiling per repetition, in %."""
    return [100 * c[3] for c in _ceilings(entry, cores)]


def _ceiling_lines(sizes: list[dict[str, Any]], cores: int) -> list[str]:
    rows = []
    for entry in sizes:
        ceilings = _ceilings(entry, cores)
        if ceilings:
            rows.append([size_label(entry["size"]), fmt_summary([c[2] for c in ceilings]),
                         _ms([c[1] for c in ceilings]), _ms([c[0] for c in ceilings]),
                         fmt_summary([100 * c[3] for c in ceilings]) + " %",
                         fmt_summary([100 * r for r in _paired_ratios(entry)]) + " %"])
    if not rows:
        return []
    lines = ["**How close this machine lets the pipeline get.** Everything shares its "
             f"{cores} cores. The pipeline does all of the limit's S3 work (the same requests from the same client "
             "library, served by the same S3 server) plus the broker's (quorum queues: every pointer, ACK and settlement "
             "is a Raft command replicated to three nodes on the same cores) and the ledger's. *L* is the CPU the limit "
             "run used per object: its processes without their start-up, plus the S3 server (capped at "
             f"{cores} cores ÷ its objects/s: the first upload and the processes' shutdown fall outside the timed span, "
             "so the raw figure can read above the cores there are). *B* is what RabbitMQ and PostgreSQL used per "
             "object in the pipeline run. Even if producer, consumers and coordinator cost nothing beyond the limit's "
             f"S3 work, the pipeline cannot exceed {cores} cores ÷ (L + B) objects/s; the ceiling is that rate as a share "
             "of the limit's. It is an estimate from CPU accounting on a noisy machine, good to a few percentage points:",
             ""]
    lines += _table(["payload", "limit CPU ÷ timed span, cores", "L: limit CPU ms/object",
                     "B: RabbitMQ + PostgreSQL CPU ms/object", f"ceiling: {cores} ÷ (L + B) ÷ limit objects/s",
                     "measured pipeline ÷ limit"], rows)
    lines += ["", "Where the ceiling leaves room (large payloads), the gap is the product's own per-byte work, which the "
              "limit does not do: gzip and two sha256 passes in the producer; download, gunzip and two sha256 passes in "
              "every consumer, the verification the product exists for (sections 5 and Profile)."]
    return lines + [""]


def _relief_section(relief: dict[str, Any], plots: Path) -> list[str]:
    runs = relief["runs"]
    lines = ["## 2. Broker relief: inline payloads versus pointers", "",
             "Same payloads, same kind of quorum queue (durable, `x-queue-type: quorum`, dead-letter exchange, delivery "
             "limit), two recipient queues, persistent publishes each waiting for its confirm; nobody consumes, so the "
             "broker holds the whole backlog. *Inline*: the payload is the message (`bench/inline.py`). *Pointer*: "
             "`claimcheck producer` (gzip, S3 upload, then a ~0.7 KiB pointer to the coordinator queue and both recipient "
             "queues). Bytes written: the RabbitMQ nodes' `write_bytes` in `/proc/<pid>/io` (the quorum queues' write-ahead "
             "log; each message is written once per replica, three replicas). Memory: growth of the nodes' summed RSS, "
             "sampled every 0.1 s, peak over the run.", ""]
    rows = []
    for size in sorted({r["size"] for r in runs}):
        for mode in ("inline", "pointer"):
            picked = [r for r in runs if r["size"] == size and r["mode"] == mode]
            good = _ok(picked)
            steady = [r for r in good if not r.get("nodes_restarted")]  # broker figures only without node restarts
            payload_mib = [r["published"] * size / MiB for r in steady if r.get("published")]
            rows.append([
                size_label(size), mode, str(picked[0]["count"]) if picked else "",
                fmt_summary([r["msgs_per_s"] for r in good if _finite(r.get("msgs_per_s"))]),
                fmt_summary([r["mib_per_s"] for r in good if _finite(r.get("mib_per_s"))]),
                fmt_summary([r["write_bytes"] / MiB for r in steady]),
                fmt_summary([r["write_bytes"] / MiB / p for r, p in zip(steady, payload_mib, strict=False) if p]),
                fmt_summary([r["rss_growth"] / MiB for r in steady]),
                fmt_summary([r["node_rss_peak"] / MiB for r in steady]),
                "; ".join(filter(None, [f"{len(picked) - len(good)} failed" if len(picked) != len(good) else "",
                                        f"{len(good) - len(steady)} with a node restart left out of the broker columns"
                                        if len(good) != len(steady) else ""])),
            ])
    lines += _table(["payload", "mode", "messages/run", "publish msgs/s", "publish payload MiB/s",
                     "broker MiB written", "written per payload MiB", "broker RSS growth MiB", "busiest node RSS MiB", ""],
                    rows)
    ratio_rows = []
    for size in sorted({r["size"] for r in runs}):
        by_rep: dict[int, dict[str, dict[str, Any]]] = {}
        for r in _ok([r for r in runs if r["size"] == size and not r.get("nodes_restarted")]):
            by_rep.setdefault(r["rep"], {})[r["mode"]] = r
        pairs = [(v["inline"], v["pointer"]) for v in by_rep.values() if "inline" in v and "pointer" in v]
        ratio_rows.append([
            size_label(size),
            fmt_summary([i["msgs_per_s"] / p["msgs_per_s"] for i, p in pairs if p.get("msgs_per_s")]),
            fmt_summary([i["write_bytes"] / max(p["write_bytes"], 1) for i, p in pairs]),
        ])
    lines += ["Inline ÷ pointer, repetition by repetition:", ""]
    lines += _table(["payload", "publish throughput", "broker bytes written"], ratio_rows)
    lines += [f"![publish throughput, bytes written and memory, inline versus pointer](bench/{plot_relief(runs, plots)})", ""]
    probe = relief.get("max_message", {})
    settings = probe.get("settings", {})
    if probe:
        lines += [
            "**Where inline breaks.**",
            "",
            f"- *Maximum message size*: this broker runs with `max_message_size` = {_mib(probe.get('limit', 0))} MiB "
            "(the RabbitMQ 3.10 default; 4.0 lowers the default to 16 MiB). One inline message of "
            f"{probe.get('size')} bytes was refused: `{probe.get('error')}` — the channel is closed, so a publisher "
            "that retries on channel errors would retry it forever. As a pointer, the same payload is a message of "
            "well under 1 KiB; section 4 sends 100 MiB (and with `FULL=1` 1 GiB) payloads through the product.",
            f"- *Memory alarm*: each node blocks every publisher on the cluster once its memory passes the high "
            f"watermark ({_mib(max([v for v in settings.get('mem_limit_bytes') or [] if isinstance(v, int)], default=0))}"
            " MiB per node here). "
            "Quorum queues keep message bodies in the write-ahead log's memory tables until they are flushed, and the "
            "nodes' RSS grew by the amounts in the table while the inline backlog was written; extrapolating the "
            "busiest node's growth per payload MiB gives the backlog at which the alarm would fire. The benchmark does "
            "not drive the shared broker into the alarm on purpose: it would block every other user of the stack.",
            "",
        ]
        for size in sorted({r["size"] for r in runs}):
            good = [r for r in _ok(runs) if r["size"] == size and r["mode"] == "inline" and r.get("published")]
            growth = [r["rss_growth"] / 3 / (r["published"] * size) for r in good if r["rss_growth"] > 0]
            limit = max([v for v in settings.get("mem_limit_bytes") or [] if isinstance(v, int)], default=0)
            if growth and limit:
                per_byte = statistics.median(growth)
                start = statistics.median([r["rss_start"] / 3 for r in good])
                backlog = (limit - start) / per_byte if per_byte > 0 else math.inf
                lines.append(f"  - {size_label(size)} inline: about {fmt(per_byte, 2)} MiB of RSS per node per "
                             f"payload MiB published; from this run's starting RSS the watermark is about "
                             f"{_mib(backlog)} MiB of backlog away.")
        lines.append("")
    return lines


def _coordinator_section(coordinator: dict[str, Any], plots: Path) -> list[str]:
    drains = _ok(coordinator["drains"])
    lines = ["## 3. Coordinator ACK throughput", "",
             f"The product fills the coordinator's queues (producer and consumers of two groups, no coordinator running): "
             f"{coordinator['objects']} pointers and {2 * coordinator['objects']} signed ACKs, kept and put back before each "
             "repetition into a fresh ledger database. One `claimcheck coordinator` process then drains them; the rate is "
             "taken from the ledger (first `objects.first_seen_at` to last `acks.acked_at`). Baseline: the same number of "
             "single-row `INSERT ... ON CONFLICT DO UPDATE` upserts into a copy of the `acks` table, one transaction each, "
             "one connection. The coordinator beats it by batching: it applies everything one read from the broker brought "
             "(up to its prefetch of 1,000 per queue) in one transaction with a fixed number of statements, settles the batch "
             "with one multiple-ack, and deletes up to 1,000 objects per S3 `DeleteObjects` request (docs/protocol.md).", ""]
    rows = [[
        fmt_summary([d["acks_per_s"] for d in drains]),
        fmt_summary([d["messages_per_s"] for d in drains]),
        fmt_summary([d["upserts_per_s"] for d in drains]),
        fmt_summary([d["acks_per_s"] / d["upserts_per_s"] for d in drains]) + " ×",
        fmt_summary([d["all_deleted_seconds"] for d in drains]),
        fmt_summary([1000 * d["coordinator_cpu_seconds"] / (d["acks"] + d["pointers"]) for d in drains]),
    ]]
    lines += _table(["ACKs/s", "messages/s (pointers + ACKs)", "baseline upserts/s", "ACKs/s ÷ baseline",
                     "seconds until all deleted", "coordinator CPU ms per message (incl. start-up)"], rows)
    lines += [f"![coordinator against the upsert baseline](bench/{plot_coordinator(coordinator, plots)})", ""]
    failed = [d["error"] for d in coordinator["drains"] if d.get("error")]
    if failed:
        lines += [f"Failed repetitions: {'; '.join(failed)}", ""]
    return lines


def _memory_section(runs: list[dict[str, Any]], plots: Path) -> list[str]:
    lines = ["## 4. Memory", "",
             "Peak RSS (`ru_maxrss` from `os.wait4`) of a fresh `claimcheck producer --count 2` (two payloads in flight "
             "with the default `--parallelism 2`) and of a fresh `claimcheck consumer` verifying both.", ""]
    rows = []
    for size in sorted({r["size"] for r in runs}):
        good = [r for r in _ok(runs) if r["size"] == size]
        rows.append([size_label(size), fmt_summary([r["producer_rss"] / MiB for r in good]),
                     fmt_summary([r["consumer_rss"] / MiB for r in good]),
                     fmt_summary([r["producer_seconds"] for r in good]), fmt_summary([r["consumer_seconds"] for r in good]),
                     str(len([r for r in runs if r["size"] == size]) - len(good))])
    lines += _table(["payload", "producer peak RSS MiB", "consumer peak RSS MiB", "producer seconds",
                     "consumer seconds (both objects)", "failed"], rows)
    lines += [f"![peak RSS by payload size](bench/{plot_memory(runs, plots)})", ""]
    return lines


def _pipeline_rss(sizes: list[dict[str, Any]]) -> list[str]:
    if not sizes:
        return []
    parts = [f"{size_label(e['size'])}: "
             f"{fmt_summary([r['producer_rss'] / MiB for r in _ok(e['pipeline']) if r.get('producer_rss')])}"
             for e in sizes]
    return ["The producers of the pipeline runs in section 1 (`--count` objects, two in flight) peaked at, in MiB: "
            + "; ".join(parts) + ".", ""]


def _bend(entries: list[dict[str, Any]]) -> str:
    points = [(e, statistics.median(_rates(e["pipeline"], "mib_per_s")))
              for e in entries if _rates(e["pipeline"], "mib_per_s")]
    for (e0, r0), (e1, r1) in zip(points, points[1:], strict=False):
        if r1 < r0 * 1.25:
            per = {c: _cpu_per_object(e1["pipeline"], c) for c in COMPONENTS}
            top = sorted((c for c in per if _finite(per[c])), key=lambda c: per[c], reverse=True)[:2]
            return (f"Payload MiB/s grows with the payload up to {size_label(e0['size'])} ({fmt(r0, 3)} MiB/s) and then "
                    f"flattens ({fmt(r1, 3)} MiB/s at {size_label(e1['size'])}). Below that, per-object costs (HTTP "
                    "requests, confirms, quorum-queue commands, ledger transactions) dominate, so bigger payloads come "
                    "almost for free; above it, per-byte costs do: at "
                    f"{size_label(e1['size'])} most CPU goes to {top[0]} and {top[1]} (the S3 server storing and serving "
                    "the bytes; the consumers' download, gunzip and two sha256 passes; the producer's gzip and hashing). "
                    "The broker's and the ledger's work per object does not depend on the payload size; their CPU per "
                    "object below grows with it only because their background activity is spread over fewer objects "
                    "per second.")
    return "Payload MiB/s keeps growing over the whole range measured."


def _per_group_cost(groups: list[dict[str, Any]]) -> str:
    """Least-squares slope of CPU per object over the number of groups, per component."""
    xs = [e["groups"] for e in groups]
    if len(xs) < 2:
        return ""
    slopes = {}
    for component in COMPONENTS:
        ys = [_cpu_per_object(e["pipeline"], component) * 1000 for e in groups]
        if all(_finite(y) for y in ys):
            slopes[component] = statistics.linear_regression(xs, ys).slope
    growing = {c: v for c, v in sorted(slopes.items(), key=lambda kv: -kv[1]) if v >= 0.5}
    grows = ", ".join(f"{c} {fmt(v, 2)}" for c, v in growing.items())
    return (f"Each additional recipient group adds about {fmt(sum(growing.values()), 3)} ms of CPU per object ({grows} "
            "ms): one more GET and verification, one more pointer copy and one more business ACK through the quorum "
            "queues. Throughput falls roughly as 1 / (a + b × groups); the limit's per-group work (one GET) grows too, "
            f"so the share of the limit goes from {_share(groups[0])} with {groups[0]['groups']} group(s) to "
            f"{_share(groups[-1])} with {groups[-1]['groups']}.")


def _share(entry: dict[str, Any]) -> str:
    ratios = _paired_ratios(entry)
    return f"{fmt(100 * statistics.median(ratios), 3)} %" if ratios else "n/a"


def _scaling_section(results: dict[str, Any], plots: Path) -> list[str]:
    lines = ["## 5. How cost grows", ""]
    sizes = results.get("sizes", [])
    if sizes:
        lines += [_bend(sizes), ""]
        header = ["payload", "pipeline MiB/s", "limit MiB/s"] + [f"{c} CPU ms/object" for c in COMPONENTS] + ["dominant"]
        rows = []
        for entry in sizes:
            per = {c: _cpu_per_object(entry["pipeline"], c) for c in COMPONENTS}
            dominant = max((c for c in per if _finite(per[c])), key=lambda c: per[c], default="n/a")
            rows.append([size_label(entry["size"]), fmt_summary(_rates(entry["pipeline"], "mib_per_s")),
                         fmt_summary([r["objects_per_s"] * r["size"] / MiB for r in _ok(entry["limit"])
                                      if _finite(r["objects_per_s"])])]
                        + [fmt(1000 * per[c], 3) for c in COMPONENTS] + [dominant])
        lines += ["CPU seconds each part of the stack used during a run, divided by the objects in it (medians; the "
                  "services' numbers include whatever else used the shared stack meanwhile; the producer's include its "
                  "~0.5 s start-up):", ""]
        lines += _table(header, rows)
    groups = results.get("groups", [])
    if groups:
        rows = []
        for entry in groups:
            per = {c: _cpu_per_object(entry["pipeline"], c) for c in COMPONENTS}
            rows.append([str(entry["groups"]), fmt_summary(_rates(entry["pipeline"])), fmt_summary(_rates(entry["limit"])),
                         fmt_summary([100 * r for r in _paired_ratios(entry)]) + " %",
                         _ms(_latency(entry["pipeline"], "latency_created", 50))]
                        + [fmt(1000 * per[c], 3) for c in COMPONENTS])
        lines += [f"Recipient groups, {size_label(groups[0]['size'])} payloads, {groups[0]['count']} objects per run "
                  "(one consumer replica per group). " + _per_group_cost(groups), ""]
        lines += _table(["groups", "pipeline objects/s", "limit objects/s", "pipeline ÷ limit", "latency p50 ms"]
                        + [f"{c} CPU ms/object" for c in COMPONENTS], rows)
        lines += [f"![throughput and CPU per object by number of recipient groups](bench/{plot_groups(groups, plots)})", ""]
    return lines


def _profile_section(results: dict[str, Any], plots: Path) -> list[str]:
    profile = results.get("profile", {})
    coordinator = (results.get("coordinator") or {}).get("profile", {}).get("coordinator")
    lines = ["## Profile", "",
             "`py-spy record --native` on the producer, one consumer and the coordinator during untimed pipeline runs, "
             "and on the coordinator during one extra ACK drain. Samples of blocked threads are left out, so the shares "
             "are shares of CPU. Native frames show time inside zlib, OpenSSL (sha256, HMAC) and libpq as such.", ""]
    rows = []
    for label, processes in profile.items():
        for name, counts in processes.items():
            shares = _shares(counts)
            top = sorted(shares.items(), key=lambda item: -item[1])[:5]
            rows.append([f"{name}, {label}", str(sum(v for k, v in counts.items() if k != profiling.IDLE)),
                         "; ".join(f"{k} {fmt(100 * v, 2)} %" for k, v in top)])
    if coordinator:
        shares = _shares(coordinator)
        top = sorted(shares.items(), key=lambda item: -item[1])[:5]
        rows.append(["coordinator, ACK drain", str(sum(v for k, v in coordinator.items() if k != profiling.IDLE)),
                     "; ".join(f"{k} {fmt(100 * v, 2)} %" for k, v in top)])
    lines += _table(["process, workload", "busy samples", "top categories"], rows)
    lines += [f"![CPU categories per process](bench/{plot_profile(profile, coordinator, plots)})", ""]
    return lines


def _method_section(results: dict[str, Any]) -> list[str]:
    return [
        "## Method and commands", "",
        "```sh",
        "make up            # the local stack",
        "make bench         # this report: python -m bench   (FULL=1: python -m bench --full)",
        f"{results.get('command', 'python -m bench')}",
        "python -m bench --sections coordinator   # one part only",
        "python -m bench --report-only            # re-render from docs/bench/results.json",
        "```",
        "",
        "- Every process is the product's own command (`python -m claimcheck producer|consumer|coordinator`), "
        "configured only through `CLAIMCHECK_*` variables. A run works in its own RabbitMQ vhosts "
        "(`ccbench-<run>-*`), PostgreSQL databases (`ccbench_<run>_*`) and S3 bucket (`ccbench-<run>`), with recipient "
        "groups and jobs named after the run, and deletes all of them at the end; the stack's default queues and ledger "
        "are never touched.",
        "- Throughput is `N / (last deleted_at - first pointer_created_at)` from the ledger (for the limit, from its own "
        "timestamps: first PUT done to last DELETE done): from the first object stored to the last one deleted, without "
        "process start-up. Not the spacing of the deletions alone: the coordinator deletes in batches, so several objects "
        "share one deletion time. Latency per object is `deleted_at - pointer_created_at` (limit: PUT done to DELETE "
        "done).",
        "- Each configuration is repeated; the pipeline and its limit run back to back in every repetition, and ratios "
        "are taken per repetition. The raw numbers of every run are in `docs/bench/results.json`; the processes' logs "
        "and the raw py-spy profiles stay in `.stack/bench/<run>/`.",
        "- The payload is the product's generator (`claimcheck.payload.generate`: JSON around base64 filler, which "
        "gzip shrinks to about 76 %); the limit uploads random bytes of the same stored size.",
        "- Broker bytes written come from `/proc/<pid>/io` of the three Erlang VMs rather than from "
        "`rabbitmq_io_write_bytes_total`, which the Prometheus plugin updates only every few seconds and which does not "
        "count the quorum queues' write-ahead log.",
        "- CPU per component comes from `/proc/<pid>/stat` (services) and `os.wait4` (the producer). Profiles come "
        "from separate, untimed runs, because py-spy's native sampling slows the sampled process.",
        "- The limit uploads with one DELETE per object, as defined; the product's deleter removes up to 1,000 objects "
        "per `DeleteObjects` request, one of the ways it spends less than the limit on S3 per object.",
        "",
        "## What the numbers reflect",
        "",
        "Choices in the product made from these measurements and the profiles above (the commit messages carry the "
        "before and after of each):",
        "",
        "- coordinator: a batch per broker read applied in one transaction with a fixed number of statements, one "
        "multiple-ack per batch, deletes batched into `DeleteObjects`, prefetch 1,000;",
        "- consumers: each worker publishes its business ACK on its own connection and awaits the confirm in parallel; "
        "prefetch twice the workers;",
        "- producer: ISA-L gzip level 1, parts read as exactly one copy, at most three parts of 5 MiB in memory per "
        "upload, one glibc malloc arena (flat peak RSS up to 1 GiB payloads);",
        "- S3 client: no CRC32 on bodies and no SigV4 payload hash (the signed pointer's sha256 covers both), "
        "connection pool of 16;",
        "- every process: Python's garbage collector frozen after the imports and run on gen 0 every 10,000 "
        "allocations instead of 700 (the coordinator spent about a fifth of its CPU in it during an ACK drain).",
        "",
    ]
