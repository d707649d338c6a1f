"""Run the whole benchmark suite, write the raw results as JSON and print a summary.

    .venv-bench/bin/python -m bench.run            # the full suite, about 17 minutes
    BENCH_QUICK=1 .venv-bench/bin/python -m bench.run   # a smoke run, about 2 minutes

`make bench` creates .venv-bench with Taskboard and the peers and runs this.
The raw results go to bench/results/bench-<UTC time>.json and
bench/results/latest.json; docs/benchmarks.md explains each table.
"""

import argparse
import json
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime

from . import drain
from .common import RESULTS_DIR, ROOT, describe_machine, median, percentile
from .latency import cross_process_latency, idle_cpu
from .profile_taskboard import count_round_trips, profile_worker
from .raw_sql import raw_run
from .systems import CONCURRENCY, PAIRS, POLL_INTERVAL, SYSTEMS
from .throughput import drain_run

# Drain rates of single runs on a shared 2-core machine differ by up to a
# third, so each configuration runs five times and the tables show medians.
FULL = dict(tasks=5000, runs=5, processes=[1, 4], raw_tasks=5000, in_process_samples=50,
            cross_samples_default_poll=40, cross_samples_short_poll=100, idle_seconds=30,
            round_trip_tasks=1000, profile_tasks=3000, profile_seconds=8)
QUICK = dict(tasks=300, runs=1, processes=[1, 4], raw_tasks=500, in_process_samples=10,
             cross_samples_default_poll=5, cross_samples_short_poll=10, idle_seconds=5,
             round_trip_tasks=200, profile_tasks=300, profile_seconds=2)

DATABASES = ("sqlite", "postgresql")


def progress(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def source_state() -> dict:
    """Return the commit the benchmark ran on and whether app/ had uncommitted changes."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"),
            "app_changes_uncommitted": bool(git("status", "--porcelain", "app", "migrations"))}


def run_throughput(settings: dict, systems: list[str]) -> list[dict]:
    results = []
    # Runs are the outer loop, so that a slow spell of the machine hits every system alike.
    for run in range(settings["runs"]):
        for processes in settings["processes"]:
            for key in systems:
                progress(f"throughput run {run + 1}/{settings['runs']}: {key}, "
                         f"{processes} process(es), {settings['tasks']} tasks")
                result = drain_run(key, settings["tasks"], processes)
                result["run"] = run + 1
                results.append(result)
    return results


def _median_of_measured(values) -> float | None:
    """Return the median of the values that are not None, or None if there are none.

    The rate from the first finished task is None for a run that finished
    every task before the benchmark's first count saw any.
    """
    measured = [value for value in values if value is not None]
    return median(measured) if measured else None


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    return None if ours is None or theirs is None else ours / theirs


def _format(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def summarize_throughput(results: list[dict]) -> dict:
    summary = {}
    for key in SYSTEMS:
        for processes in sorted({r["processes"] for r in results}):
            runs = [r for r in results if r["system"] == key and r["processes"] == processes]
            if not runs:
                continue
            summary[f"{key}/{processes}"] = {
                "system": key,
                "processes": processes,
                "runs": len(runs),
                "submit_per_second": median(r["submit_per_second"] for r in runs),
                "drain_per_second": median(r["drain_per_second"] for r in runs),
                "steady_per_second": _median_of_measured(r["steady_per_second"] for r in runs),
                "worker_cpu_ms_per_task": median(r["worker_cpu_ms_per_task"] for r in runs),
                "worker_peak_rss_mib": median(max(r["worker_peak_rss_mib"]) for r in runs),
                "postgres_per_task": runs[len(runs) // 2].get("postgres_per_task"),
            }
    ratios = []
    for taskboard, peer in PAIRS:
        for processes in sorted({r["processes"] for r in results}):
            ours, theirs = summary.get(f"{taskboard}/{processes}"), summary.get(f"{peer}/{processes}")
            if not ours or not theirs:
                continue
            ratios.append({
                "taskboard": taskboard, "peer": peer, "processes": processes,
                **{f"{measure}_ratio": _ratio(ours[measure], theirs[measure])
                   for measure in ("submit_per_second", "drain_per_second", "steady_per_second")},
            })
    return {"medians": summary, "ratios": ratios}


def run_latency(settings: dict) -> list[dict]:
    results = []
    for kind in DATABASES:
        progress(f"latency in-process on {kind}")
        samples = drain.latency_run(kind, settings["in_process_samples"])
        results.append(_latency_row(kind, "in-process (wake-up signal, poll 5 s)", samples))
        for poll, count in ((None, settings["cross_samples_default_poll"]),
                            (POLL_INTERVAL, settings["cross_samples_short_poll"])):
            label = "poll 1 s, default" if poll is None else f"poll {poll:g} s"
            progress(f"latency across processes on {kind}, {label}")
            samples = cross_process_latency(kind, count, poll)
            results.append(_latency_row(kind, f"across processes ({label})", samples))
    return results


def _latency_row(kind: str, setup: str, samples: list[float]) -> dict:
    return {"database": kind, "setup": setup, "samples": len(samples),
            "median_ms": median(samples), "p95_ms": percentile(samples, 0.95),
            "max_ms": max(samples), "all_ms": samples}


def print_summary(report: dict) -> None:
    lines = []
    throughput = report.get("throughput")
    if throughput:
        lines.append(f"Throughput, {report['settings']['tasks']} no-op tasks, medians of "
                     f"{report['settings']['runs']} runs, concurrency {CONCURRENCY} per process")
        lines.append(f"{'system':<22}{'procs':>6}{'submit/s':>10}{'drain/s':>10}"
                     f"{'steady/s':>10}{'cpu ms/task':>12}{'peak MiB':>10}")
        for row in throughput["summary"]["medians"].values():
            lines.append(f"{row['system']:<22}{row['processes']:>6}{row['submit_per_second']:>10.0f}"
                         f"{row['drain_per_second']:>10.0f}"
                         f"{_format(row['steady_per_second'], '.0f'):>10}"
                         f"{row['worker_cpu_ms_per_task']:>12.2f}{row['worker_peak_rss_mib']:>10.1f}")
        lines.append("")
        lines.append(f"{'Taskboard / peer':<40}{'procs':>6}{'submit':>8}{'drain':>8}{'steady':>8}")
        for row in throughput["summary"]["ratios"]:
            lines.append(f"{row['taskboard'] + ' / ' + row['peer']:<40}{row['processes']:>6}"
                         f"{row['submit_per_second_ratio']:>8.2f}{row['drain_per_second_ratio']:>8.2f}"
                         f"{_format(row['steady_per_second_ratio'], '.2f'):>8}")
        lines.append("")
    for row in report.get("raw_sql", []):
        index = "with claim-order index" if row["claim_order_index"] else "Taskboard's schema"
        lines.append(f"raw SQL on {row['database']:<11} {index:<23} submit "
                     f"{row['submit_per_second']:>7.0f}/s   "
                     f"claim+complete {row['claim_complete_per_second']:>7.0f}/s")
    if report.get("raw_sql"):
        lines.append("")
    for row in report.get("latency", []):
        lines.append(f"submit-to-start {row['database']:<11} {row['setup']:<42} median "
                     f"{row['median_ms']:>7.1f} ms  p95 {row['p95_ms']:>7.1f} ms  (n={row['samples']})")
    if report.get("latency"):
        lines.append("")
    for row in report.get("idle_cpu", []):
        lines.append(f"idle CPU {row['worker']:<45} {row['cpu_percent_of_one_core']:>6.2f} % of a core")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", default=bool(os.environ.get("BENCH_QUICK")),
                        help="a smoke run with few tasks and one run (also BENCH_QUICK=1)")
    parser.add_argument("--only", action="append",
                        choices=["throughput", "raw", "latency", "idle", "profile"],
                        help="run only this part; repeat for several (default: all)")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated systems for throughput (default: {','.join(SYSTEMS)})")
    args = parser.parse_args()
    parts = set(args.only or ["throughput", "raw", "latency", "idle", "profile"])
    settings = QUICK if args.quick else FULL
    systems = [key for key in args.systems.split(",") if key]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown system(s) {', '.join(sorted(unknown))}; choose from {', '.join(SYSTEMS)}")

    # The benchmark's in-process workers would log each skipped overlapping poll.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)

    started = datetime.now(UTC)
    report = {"started_at": started.isoformat(timespec="seconds"), "quick": args.quick,
              "settings": settings, "machine": describe_machine(), "source": source_state(),
              "concurrency_per_process": CONCURRENCY, "poll_interval": POLL_INTERVAL}

    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"bench-{started:%Y%m%dT%H%M%SZ}.json")

    def save():
        # Written after every part, so that a failure later keeps what was measured.
        for target in (path, os.path.join(RESULTS_DIR, "latest.json")):
            with open(target, "w") as file:
                json.dump(report, file, indent=2)

    if "throughput" in parts:
        results = run_throughput(settings, systems)
        report["throughput"] = {"runs": results, "summary": summarize_throughput(results)}
        save()
    if "raw" in parts:
        report["raw_sql"] = []
        for kind in DATABASES:
            progress(f"raw SQL ceiling on {kind}")
            report["raw_sql"].append(raw_run(kind, settings["raw_tasks"]))
            report["raw_sql"].append(raw_run(kind, settings["raw_tasks"], claim_order_index=True))
        save()
    if "latency" in parts:
        report["latency"] = run_latency(settings)
        save()
    if "idle" in parts:
        progress(f"idle CPU over {settings['idle_seconds']} s")
        report["idle_cpu"] = idle_cpu(settings["idle_seconds"])
        save()
    if "profile" in parts:
        report["round_trips"] = []
        report["profile"] = []
        for kind in DATABASES:
            progress(f"round trips per task on {kind}")
            report["round_trips"].append(count_round_trips(kind, settings["round_trip_tasks"]))
            for processes, gil_only in ((1, True), (1, False), (4, False)):
                sampled = "the GIL holder" if gil_only else "all busy threads"
                progress(f"py-spy profile of {sampled} in a worker on {kind}, "
                         f"{processes} process(es)")
                report["profile"].append(profile_worker(
                    kind, settings["profile_tasks"], settings["profile_seconds"], processes,
                    gil_only=gil_only))
        save()

    report["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    save()
    print_summary(report)
    minutes = (datetime.now(UTC) - started).total_seconds() / 60
    progress(f"raw results in {os.path.relpath(path, ROOT)}; the suite took {minutes:.1f} min")


if __name__ == "__main__":
    main()
