"""Run the kaihooks benchmarks and record them.

    .venv/bin/python bench/run.py              # every scenario; updates BENCHMARKS.md
    .venv/bin/python bench/run.py --quick      # shorter windows, rough figures; BENCHMARKS.md untouched
    .venv/bin/python bench/run.py --only me --profile

Sets up its own Postgres database and Redis db (see setup_env.py), runs each scenario
module in SCENARIOS, writes ``bench/results/<UTC timestamp>.json``, prints a Markdown
table per scenario and rewrites that scenario's section of BENCHMARKS.md. Every process
it starts is stopped and the database dropped however the run ends (Ctrl-C included).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import profiling
import psutil
import report
import scenario_me
import scenario_p5
import scenario_p6
import setup_env

# id -> module with ID, TITLE and run(ctx) -> result dict (see scenario_me.py). Add P1-P8 here.
SCENARIOS = {module.ID: module for module in (scenario_me, scenario_p5, scenario_p6)}


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short windows, fixed concurrency; no BENCHMARKS.md")
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), help="run just this scenario")
    parser.add_argument("--profile", action="store_true",
                        help="after measuring, sample the server under load with py-spy and summarise")
    parser.add_argument("--native", action="store_true", help="with --profile: include C/Cython frames")
    parser.add_argument("--concurrency", type=int, help="fix the client concurrency instead of calibrating")
    return parser.parse_args()


def _run_scenarios(args: argparse.Namespace, stamp: str) -> list[dict[str, Any]]:
    tmp_dir = report.RESULTS / f"{stamp}.tmp"
    tmp_dir.mkdir(parents=True)
    stack = ExitStack()
    keep_logs = True
    try:
        ctx = setup_env.prepare(stack, tmp_dir)
        ctx.quick, ctx.concurrency, ctx.stamp = args.quick, args.concurrency, stamp
        ctx.profile = "native" if args.native else "python" if args.profile else ""
        results = []
        for scenario_id in args.only or list(SCENARIOS):
            say(f"scenario {scenario_id}: {SCENARIOS[scenario_id].TITLE}")
            results.append(SCENARIOS[scenario_id].run(ctx))
        keep_logs = False
        return results
    except KeyboardInterrupt:
        keep_logs = False
        raise
    finally:
        # Undo everything, and let no second Ctrl-C cut the undoing short.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            stack.close()
        finally:
            signal.signal(signal.SIGINT, previous[0])
            signal.signal(signal.SIGTERM, previous[1])
            if keep_logs:
                say(f"child process logs kept in {tmp_dir}")
            else:
                shutil.rmtree(tmp_dir, ignore_errors=True)


def main() -> int:
    args = _parse()
    # Ctrl-C and SIGTERM both stop the run cleanly (even where a parent shell set SIGINT to be ignored).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    # How busy the box was before we started: figures from a box others are loading are noisier.
    busy_before = round(psutil.cpu_percent(interval=1.0) * (psutil.cpu_count() or 1), 1)
    now = datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    command = " ".join([".venv/bin/python bench/run.py", *sys.argv[1:]])
    provenance = report.provenance()  # before the run: what was measured is what was checked out then
    try:
        results = _run_scenarios(args, stamp)
    except KeyboardInterrupt:
        say("interrupted; every process started was stopped and the bench database dropped")
        return 130
    run = {"started_utc": now.strftime("%Y-%m-%d %H:%M UTC"), "command": command, "quick": args.quick,
           "duration_s": round(time.monotonic() - started, 1), "box_cpu_pct_before": busy_before,
           "provenance": provenance, "scenarios": results}
    path = report.write_json(stamp, run)
    sections = {}
    for result in results:
        sections[str(result["id"])] = report.section(result, run, path)
        print(f"\n### {result['id']}: {result['title']}\n\n{report.table(result)}")
        if "profile" in result:
            print(f"\nProfile of the API process under load ({result['profile']['collapsed_stacks']}):\n")
            print(profiling.markdown(result["profile"]))
    print(f"\nresults: {path.relative_to(setup_env.ROOT)} ({run['duration_s']} s)")
    if args.quick:
        say("--quick: BENCHMARKS.md left as it was")
    else:
        report.update_benchmarks_md(sections)
        say(f"updated {report.BENCHMARKS_MD.relative_to(setup_env.ROOT)}")
    failed = [(result["id"], row) for result in results for row in result["rows"] if row["errors"]]
    for scenario_id, row in failed:
        say(f"{scenario_id}: {row['name']}: {row['errors']} bad responses, e.g. {row['error_samples']}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
