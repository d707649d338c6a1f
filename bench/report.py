"""Print the Markdown tables of docs/benchmarks.md from one results file.

    .venv-bench/bin/python -m bench.report bench/results/latest.json
"""

import argparse
import json

TARGET_RATIOS = {"huey-sqlite": 1.5, "procrastinate": 3.0, "pgqueuer": 1.0}


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_table(report: dict) -> str:
    machine = report["machine"]
    packages = machine["packages"]
    rows = [
        ["CPU", f"{machine['cpu_model']}, {machine['cores']} cores"],
        ["memory", f"{machine['memory_gib']} GiB"],
        ["kernel", machine["kernel"]],
        ["Python", machine["python"]],
        ["SQLite", machine["sqlite"]],
        ["PostgreSQL", machine["postgresql"]],
        ["packages", ", ".join(f"{name} {version}" for name, version in packages.items())],
        ["source", f"commit {report['source']['commit'][:10]}"
                   + (", with uncommitted changes in app/" if report["source"]["app_changes_uncommitted"]
                      else "")],
        ["date", f"{report['started_at']} to {report.get('finished_at', '?')}"],
    ]
    return _table(["", ""], rows)


def _format(value: float | None, spec: str) -> str:
    """Format a measurement, or "n/a" where a run could not measure it."""
    return "n/a" if value is None else format(value, spec)


def throughput_tables(report: dict) -> str:
    summary = report["throughput"]["summary"]
    rows = []
    for row in summary["medians"].values():
        postgres = row.get("postgres_per_task") or {}
        rows.append([
            row["system"], row["processes"], f"{row['submit_per_second']:,.0f}",
            f"{row['drain_per_second']:,.0f}", _format(row["steady_per_second"], ",.0f"),
            f"{row['worker_cpu_ms_per_task']:.2f}", f"{row['worker_peak_rss_mib']:.0f}",
            f"{postgres['commits']:.2f}" if postgres else "",
        ])
    medians = _table(["system", "worker processes", "submit tasks/s", "drain tasks/s (from launch)",
                      "drain tasks/s (from first finished)", "worker CPU ms/task",
                      "peak RSS MiB per worker", "commits/task while draining"], rows)

    rows = []
    for row in summary["ratios"]:
        target = TARGET_RATIOS[row["peer"]]
        steady = row["steady_per_second_ratio"]
        if steady is None:
            met = "not measured"
        elif steady >= target:
            met = "met"
        else:
            met = "missed"
        rows.append([f"{row['taskboard']} / {row['peer']}", row["processes"],
                     f"{row['submit_per_second_ratio']:.2f}", f"{row['drain_per_second_ratio']:.2f}",
                     _format(steady, ".2f"), f"≥ {target:g}: {met}"])
    ratios = _table(["Taskboard / peer", "worker processes", "submit", "drain (from launch)",
                     "drain (from first finished)", "target on drain"], rows)

    runs = []
    for key in dict.fromkeys(run["system"] for run in report["throughput"]["runs"]):
        for processes in report["settings"]["processes"]:
            values = [run["steady_per_second"] for run in report["throughput"]["runs"]
                      if run["system"] == key and run["processes"] == processes]
            runs.append([key, processes, ", ".join(_format(value, ",.0f") for value in values)])
    spread = _table(["system", "worker processes", "drain tasks/s of each run (from first finished)"],
                    runs)
    return f"{medians}\n\n{ratios}\n\n{spread}"


def raw_table(report: dict) -> str:
    rows = [[row["database"],
             "plus an index in claim order" if row.get("claim_order_index") else "Taskboard's",
             f"{row['submit_per_second']:,.0f}", f"{row['claim_complete_per_second']:,.0f}",
             f"{row['claim_complete_ms_per_task']:.2f}"]
            for row in report["raw_sql"]]
    return _table(["database", "schema", "submit tasks/s", "claim + complete tasks/s",
                   "ms per claim + complete"], rows)


def latency_table(report: dict) -> str:
    rows = [[row["database"], row["setup"], row["samples"], f"{row['median_ms']:.1f}",
             f"{row['p95_ms']:.1f}", f"{row['max_ms']:.1f}"] for row in report["latency"]]
    return _table(["database", "submit from", "samples", "median ms", "p95 ms", "max ms"], rows)


def idle_table(report: dict) -> str:
    rows = [[row["worker"], f"{row['cpu_percent_of_one_core']:.2f}"] for row in report["idle_cpu"]]
    return _table(["idle worker process", "CPU, % of one core"], rows)


def round_trip_table(report: dict) -> str:
    rows = []
    for row in report["round_trips"]:
        for phase in ("submit", "drain"):
            counts = row[phase]
            rows.append([row["database"], phase, f"{counts['statements']:.2f}",
                         f"{counts['transactions']:.2f}", f"{counts['round_trips']:.2f}"])
    return _table(["database", "phase", "statements/task", "transactions/task",
                   "round trips/task"], rows)


def profile_tables(report: dict, top: int = 12) -> str:
    parts = []
    for profile in report["profile"]:
        sampled = "the thread holding the GIL" if profile.get("gil_only") else "all busy threads"
        title = f"{profile['database']}, {profile['processes']} worker process(es), {sampled}"
        if "error" in profile:
            parts.append(f"{title}: {profile['error']}")
            continue
        # Thread start-up frames are on nearly every stack and carry no information.
        rows = [[frame, share] for frame, share in profile["inclusive_top"]
                if not frame.endswith(("(threading.py)", "(concurrent/futures/thread.py)"))][:top]
        own = [[frame, share] for frame, share in profile["self_top"][:top]]
        parts.append(
            f"{title}: {profile['samples']} samples over {profile['sampled_seconds']:.0f} s, "
            f"{profile['tasks_done_while_sampled']} tasks finished meanwhile, the sampled process "
            f"used {profile['sampled_process_cpu_percent']:.0f} % of a core.\n\n"
            + _table(["on the stack (inclusive)", "% of samples"], rows) + "\n\n"
            + _table(["on top of the stack (self)", "% of samples"], own)
        )
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", help="a JSON file written by bench.run")
    args = parser.parse_args()
    with open(args.results) as file:
        report = json.load(file)

    sections = [("Machine", machine_table)]
    for key, title, render in (("throughput", "Throughput", throughput_tables),
                               ("raw_sql", "Raw SQL ceiling", raw_table),
                               ("latency", "Submit-to-start latency", latency_table),
                               ("idle_cpu", "Idle CPU", idle_table),
                               ("round_trips", "Round trips", round_trip_table),
                               ("profile", "Profile", profile_tables)):
        if key in report:
            sections.append((title, render))
    for title, render in sections:
        print(f"### {title}\n\n{render(report)}\n")


if __name__ == "__main__":
    main()
