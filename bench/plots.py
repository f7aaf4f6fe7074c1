"""The PNG plots of docs/benchmarks.md (matplotlib, Agg backend): one function per figure, each
returning the file name it wrote."""

import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the backend
from matplotlib.patches import Rectangle

from bench import results
from bench.results import COMPONENTS, MiB
from bench.stats import size_label, summary

COLORS = {"producer": "#1f77b4", "consumers": "#ff7f0e", "coordinator": "#2ca02c", "rabbitmq": "#d62728",
          "postgresql": "#9467bd", "seaweedfs": "#8c564b"}


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
    _errorbar(ax, xs, [results.rates(e["pipeline"], "mib_per_s") for e in sizes], "claimcheck pipeline")
    limits = [[r["objects_per_s"] * r["size"] / MiB for r in results.ok(e["limit"]) if results.finite(r["objects_per_s"])]
              for e in sizes]
    _errorbar(ax, xs, limits, "stack limit (S3 only)", linestyle="--")
    extended = [(e, found) for e in sizes if (found := results.repetition_extended(e, cores))]
    if extended:
        _errorbar(ax, [e["size"] / MiB for e, _ in extended],
                  [[x.rate * e["size"] / MiB for x in found] for e, found in extended],
                  "extended ceiling (+ required gzip, gunzip, sha256)", linestyle="-.")
    ax.set(xscale="log", yscale="log", xlabel="payload size (MiB)", ylabel="payload MiB/s",
           title="Throughput, 2 recipient groups")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    ax = axes[0][1]
    _errorbar(ax, xs, [[100 * r for r in results.paired_ratios(e)] for e in sizes], "pipeline / limit")
    bounded = [(e, ceiling) for e in sizes if (ceiling := results.ceiling_percent(e, cores))]
    if bounded:
        _errorbar(ax, [e["size"] / MiB for e, _ in bounded], [ceiling for _, ceiling in bounded],
                  "ceiling on this machine (broker + ledger CPU)", linestyle="--")
    if extended:
        _errorbar(ax, [e["size"] / MiB for e, _ in extended],
                  [[100 * x.of_limit for x in found] for _, found in extended], "extended ceiling (+ required per-byte passes)",
                  linestyle="-.")
    ax.axhline(80, color="grey", linestyle=":", label="goal 80 %")
    ax.set(xscale="log", xlabel="payload size (MiB)", ylabel="% of the stack limit", title="Share of the limit reached")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    ax = axes[1][0]
    per_mib = {c: [results.cpu_per_object(e["pipeline"], c) * 1000 / (e["size"] / MiB) for e in sizes] for c in COMPONENTS}
    per_mib = {c: [v if results.finite(v) else 0.0 for v in values] for c, values in per_mib.items()}
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
    _errorbar(ax, xs, [results.latency_at(e["pipeline"], "latency_created", 50) for e in sizes], "p50, flat out")
    _errorbar(ax, xs, [results.latency_at(e["pipeline"], "latency_created", 99) for e in sizes], "p99, flat out", linestyle="--")
    offered = [e for e in sizes if e.get("latency")]
    if offered:
        _errorbar(ax, [e["size"] / MiB for e in offered], [results.latency_at(e["latency"], "latency_seen", 50) for e in offered],
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
    _errorbar(ax, xs, [results.rates(e["pipeline"]) for e in groups], "claimcheck pipeline")
    _errorbar(ax, xs, [results.rates(e["limit"]) for e in groups], "stack limit (S3 only)", linestyle="--")
    ax.set(xlabel="recipient groups", ylabel="objects/s", title=f"Throughput, {size_label(groups[0]['size'])} payloads")
    ax.set_xticks(xs)
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.grid(True, alpha=0.3)
    ax = axes[1]
    _errorbar(ax, xs, [[100 * r for r in results.paired_ratios(e)] for e in groups], "pipeline / limit")
    ax.set(xlabel="recipient groups", ylabel="% of the stack limit", title="Share of the limit reached")
    ax.set_xticks(xs)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax = axes[2]
    bottom = [0.0] * len(groups)
    for component in COMPONENTS:
        values = [results.cpu_per_object(e["pipeline"], component) * 1000 for e in groups]
        values = [v if results.finite(v) else 0.0 for v in values]
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
                picked = [run[key] / (MiB if is_bytes else 1) for run in runs if run["size"] == size and run["mode"] == mode
                          and not run.get("error") and results.finite(run.get(key))]
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
    drains = results.ok(coordinator["drains"])
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = ["coordinator\nACKs/s", "coordinator\nmessages/s", "baseline\nsingle-row upserts/s"]
    series = [[d["acks_per_s"] for d in drains], [d["messages_per_s"] for d in drains], [d["upserts_per_s"] for d in drains]]
    colors = ["#2ca02c", "#98df8a", "#9467bd"]
    sharded = coordinator.get("sharded")
    if sharded:
        labels.insert(1, f"{sharded['shards']} shards\nACKs/s")
        series.insert(1, [d["acks_per_s"] for d in results.ok(sharded["drains"])])
        colors.insert(1, "#1f77b4")
    meds = [statistics.median(s) if s else 0 for s in series]
    ax.bar(labels, meds, color=colors,
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
        _errorbar(ax, xs, [[r[key] / MiB for r in results.ok(runs) if r["size"] == s and key in r] for s in sizes], label)
    ax.axhline(150, color="grey", linestyle=":", label="goal 150 MiB")
    ax.set(xscale="log", xlabel="payload size (MiB)", ylabel="peak RSS (MiB)", title="Peak RSS (ru_maxrss)")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, out / "memory.png")


def plot_profile(profile: dict[str, Any], coordinator_profile: dict[str, int] | None, out: Path) -> str:
    rows: list[tuple[str, dict[str, float]]] = []
    for label, processes in profile.items():
        for name, counts in processes.items():
            rows.append((f"{name}, {label}", results.busy_shares(counts)))
    if coordinator_profile:
        rows.append(("coordinator, ACK drain", results.busy_shares(coordinator_profile)))
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
    handles = [Rectangle((0, 0), 1, 1, color=cmap(ci % 20)) for ci in range(len(categories))]
    ax.legend(handles, categories, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return _save(fig, out / "profile.png")
