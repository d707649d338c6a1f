"""Measure Taskboard's drain rate and worker CPU per task only, for quick A/B comparisons.

    .venv-bench/bin/python -m bench.engine_check --tasks 2000 --runs 3

It runs the drain of `make bench` (bench/throughput.py) for Taskboard
alone: no-op tasks submitted one at a time, then `flask worker` processes
started to drain them. Each run is printed, not only medians, so that the
noise of a shared machine shows. Compare worker CPU ms/task first,
because on a busy machine it moves less than tasks/s.
"""

import argparse
import logging

from .throughput import drain_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=2000, help="no-op tasks per run")
    parser.add_argument("--runs", type=int, default=3, help="runs of each configuration")
    parser.add_argument("--processes", default="1,4",
                        help="comma-separated worker process counts (default: 1,4)")
    parser.add_argument("--databases", default="sqlite,postgresql",
                        help="comma-separated databases (default: sqlite,postgresql)")
    args = parser.parse_args()
    logging.getLogger("alembic").setLevel(logging.WARNING)

    processes = [int(count) for count in args.processes.split(",") if count]
    databases = [name for name in args.databases.split(",") if name]
    print(f"{'system':<22}{'procs':>6}{'run':>5}{'steady/s':>10}{'drain/s':>10}"
          f"{'cpu ms/task':>12}{'commits/task':>14}", flush=True)
    for run in range(1, args.runs + 1):
        for count in processes:
            for database in databases:
                result = drain_run(f"taskboard-{database}", args.tasks, count)
                commits = (result.get("postgres_per_task") or {}).get("commits")
                rate = result["steady_per_second"]
                # None when every task finished before the first count saw one.
                steady = "n/a" if rate is None else f"{rate:.0f}"
                print(f"{result['system']:<22}{count:>6}{run:>5}"
                      f"{steady:>10}{result['drain_per_second']:>10.0f}"
                      f"{result['worker_cpu_ms_per_task']:>12.2f}"
                      f"{'' if commits is None else format(commits, '.2f'):>14}", flush=True)


if __name__ == "__main__":
    main()
