"""``python -m bench``: run the benchmark suite against the local stack and write the report.

    python -m bench                 # default suite, a few minutes; writes docs/benchmarks.md, docs/bench/*.png
    python -m bench --full          # longer runs, 5 repetitions, 1 GiB memory case (FULL=1)
    python -m bench --sections pipeline,coordinator
    python -m bench --report-only   # re-render the report from docs/bench/results.json

The stack must be up (``make up``). The suite uses its own vhosts, databases and bucket and
removes them when it ends, also on Ctrl-C.
"""

import argparse
import json
import logging
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

from bench import profiling, report, suite
from bench.pipeline import Pipeline
from bench.stack import REPO, BenchEnv, ensure_bucket

log = logging.getLogger("bench")
SECTIONS = ("pipeline", "groups", "relief", "coordinator", "memory", "profile")


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_suite(config: suite.Config, sections: list[str], workdir: Path,
              save: Any = lambda results: None) -> dict[str, Any]:
    run_id = f"{time.strftime('%m%d%H%M')}{uuid.uuid4().hex[:4]}"
    env = BenchEnv(run_id, workdir / run_id)
    started = time.time()
    results: dict[str, Any] = {
        "run_id": run_id,
        "mode": "full" if config.full else "default",
        "repeats": config.repeats,
        "command": "python -m bench" + (" --full" if config.full else "") + (
            f" --sections {','.join(sections)}" if sorted(sections) != sorted(SECTIONS) else ""),
        "machine": suite.machine(),
        "context_start": suite.context(),
        "config": {key: (dict(value) if isinstance(value, dict) else value) for key, value in vars(config).items()},
    }
    log.info("run %s: sections %s, logs in %s", run_id, ", ".join(sections), env.workdir)
    try:
        ensure_bucket(env.bucket)
        if {"pipeline", "groups", "profile"} & set(sections):
            groups = max(config.groups) if "groups" in sections else 2
            pipeline = Pipeline(env, groups).start()
            try:
                if "pipeline" in sections:
                    results["sizes"] = suite.size_sweep(env, pipeline, config)
                    save(results)
                if "groups" in sections:
                    results["groups"] = suite.groups_sweep(env, pipeline, config)
                    save(results)
                if "profile" in sections and profiling.available():
                    results["profile"] = suite.profile_pipeline(env, pipeline)
                    save(results)
            finally:
                pipeline.stop()
        if "relief" in sections:
            results["relief"] = suite.relief(env, config)
            save(results)
        if "coordinator" in sections:
            if "profile" not in sections:
                config.profile = False
            results["coordinator"] = suite.coordinator(env, config)
            save(results)
        if "memory" in sections:
            results["memory"] = suite.memory(env, config)
            save(results)
    finally:
        log.info("cleaning up run %s", run_id)
        env.cleanup()
        results["seconds"] = time.time() - started
        results["context_end"] = suite.context()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", default=os.environ.get("FULL", "") in ("1", "true", "yes"),
                        help="longer runs, more repetitions, the 1 GiB memory case (also FULL=1)")
    parser.add_argument("--repeats", type=int, help="repetitions per measurement (default 3, --full 5; at least 3)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--plots", type=Path, default=REPO / "docs" / "bench")
    parser.add_argument("--results", type=Path, help="results JSON (default <plots>/results.json)")
    parser.add_argument("--workdir", type=Path, default=REPO / ".stack" / "bench", help="process logs and profiles")
    parser.add_argument("--report-only", action="store_true", help="only re-render the report from the results JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bench: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("pika").setLevel(logging.WARNING)
    results_path = args.results or args.plots / "results.json"
    if args.report_only:
        results = json.loads(results_path.read_text())
    else:
        sections = [name.strip() for name in args.sections.split(",") if name.strip()]
        unknown = sorted(set(sections) - set(SECTIONS))
        if unknown:
            parser.error(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
        if args.repeats is not None and args.repeats < 3:
            parser.error("--repeats must be at least 3")
        signal.signal(signal.SIGTERM, _sigterm)
        config = suite.Config.for_mode(args.full, args.repeats)
        args.plots.mkdir(parents=True, exist_ok=True)

        def save(partial: dict[str, Any]) -> None:  # after every section, so an interrupted run keeps its data
            results_path.with_suffix(".partial.json").write_text(json.dumps(partial, indent=1, default=str))

        results = run_suite(config, sections, args.workdir, save)
        results_path.write_text(json.dumps(results, indent=1, default=str))
        results_path.with_suffix(".partial.json").unlink(missing_ok=True)
        log.info("results in %s (%.0f s)", results_path, results["seconds"])
    report.write(results, args.doc, args.plots)
    log.info("wrote %s and plots in %s", args.doc, args.plots)


if __name__ == "__main__":
    main()
