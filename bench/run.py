"""Run the kaihooks benchmarks and record them.

    .venv/bin/python bench/run.py              # every scenario; updates BENCHMARKS.md
    .venv/bin/python bench/run.py --quick      # shorter windows, rough figures; BENCHMARKS.md untouched
    .venv/bin/python bench/run.py --only me --profile
    .venv/bin/python bench/run.py --only P1,P2      # P2 needs P1's rate: P1 (and its limit) run too
    .venv/bin/python bench/run.py --only P8         # memory, at a fixed rate (--only P1,P8: half of P1's)

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
import scenario_limit
import scenario_me
import scenario_p1
import scenario_p2
import scenario_p2s
import scenario_p3
import scenario_p4
import scenario_p5
import scenario_p6
import scenario_p7
import scenario_p8
import scenario_p9
import scenario_p10
import setup_env

# id -> module with ID, TITLE and run(ctx) -> result dict (see scenario_me.py), in running order.
SCENARIOS = {module.ID: module for module in (scenario_me, scenario_p5, scenario_p6, scenario_p9, scenario_limit,
                                              scenario_p1, scenario_p2, scenario_p2s, scenario_p3, scenario_p4,
                                              scenario_p7, scenario_p8, scenario_p10)}
# What a scenario needs measured earlier in the same run (P1 runs the limit beside itself, at the limit
# scenario's best concurrency; P2 runs at half P1's rate; P3 compares with P1 and P2; P4's bound is P1's rate).
# P8 runs at half P1's rate when P1 ran before it, else at a fixed rate (scenario_p8.FIXED_RATE): not a need.
NEEDS = {"P1": ("limit",), "P2": ("P1",), "P2s": ("P1",), "P10": ("P1",), "P3": ("P1", "P2"), "P4": ("P1",)}


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short windows, fixed concurrency; no BENCHMARKS.md")
    parser.add_argument("--long", action="store_true",
                        help="P8 publishes for quality.md's 10 minutes instead of 2 (the run then takes about 18)")
    parser.add_argument("--only", action="append", type=_ids,
                        help=f"run just these scenarios, comma-separated or repeated ({', '.join(SCENARIOS)}); "
                             "what they need runs too")
    parser.add_argument("--profile", action="store_true",
                        help="after measuring, sample the server under load with py-spy and summarise")
    parser.add_argument("--native", action="store_true", help="with --profile: include C/Cython frames")
    parser.add_argument("--concurrency", type=int, help="fix the client concurrency instead of calibrating")
    parser.add_argument("--set", action="append", default=[], metavar="KAIHOOKS_NAME=VALUE", type=_setting,
                        help="run the API and worker with this setting changed (an experiment: BENCHMARKS.md is "
                             "left as it was; the setting is recorded in the results)")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the child processes' logs (results/<stamp>.tmp/) even after a clean run")
    return parser.parse_args()


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("KAIHOOKS_") or name in ("KAIHOOKS_SECRET_KEY", "KAIHOOKS_INTERNAL_TOKENS"):
        raise argparse.ArgumentTypeError("expected KAIHOOKS_NAME=VALUE (not the secret key or internal tokens)")
    return name, value


def _ids(text: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [c for c in chosen if c not in SCENARIOS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown scenario(s) {', '.join(unknown)}; "
                                         f"choose from {', '.join(SCENARIOS)}")
    return chosen


def _selected(only: list[list[str]] | None) -> list[str]:
    """The scenarios to run, in SCENARIOS order, with what they need."""
    if not only:
        return list(SCENARIOS)
    wanted: set[str] = set()

    def add(scenario_id: str) -> None:
        if scenario_id not in wanted:
            wanted.add(scenario_id)
            for need in NEEDS.get(scenario_id, ()):
                add(need)

    for group in only:
        for scenario_id in group:
            add(scenario_id)
    extra = wanted - {s for group in only for s in group}
    if extra:
        say(f"also running {', '.join(s for s in SCENARIOS if s in extra)}: needed by the scenarios chosen")
    return [s for s in SCENARIOS if s in wanted]


def _run_scenarios(args: argparse.Namespace, stamp: str) -> list[dict[str, Any]]:
    tmp_dir = report.RESULTS / f"{stamp}.tmp"
    tmp_dir.mkdir(parents=True)
    stack = ExitStack()
    keep_logs = True
    try:
        ctx = setup_env.prepare(stack, tmp_dir)
        ctx.env.update(dict(args.set))
        ctx.quick, ctx.long, ctx.concurrency, ctx.stamp = args.quick, args.long, args.concurrency, stamp
        ctx.profile = "native" if args.native else "python" if args.profile else ""
        results = []
        for scenario_id in _selected(args.only):
            say(f"scenario {scenario_id}: {SCENARIOS[scenario_id].TITLE}")
            began = time.monotonic()
            result = SCENARIOS[scenario_id].run(ctx)
            result["scenario_s"] = round(time.monotonic() - began, 1)  # wall time, set-up included
            say(f"scenario {scenario_id} took {result['scenario_s']} s")
            results.append(result)
        keep_logs = args.keep_logs
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
           "long": args.long, "settings_changed": dict(args.set),
           "duration_s": round(time.monotonic() - started, 1), "box_cpu_pct_before": busy_before,
           "provenance": provenance, "scenarios": results}
    path = report.write_json(stamp, run)
    sections = {}
    for result in results:
        sections[str(result["id"])] = report.section(result, run, path)
        print(f"\n### {result['id']}: {result['title']}\n\n{report.table(result)}")
        for prof in result.get("profiles", [result["profile"]] if "profile" in result else []):
            process = prof.get("process", "api")
            print(f"\nProfile of the {process} process under load ({prof['collapsed_stacks']}):\n")
            print(profiling.markdown(prof))
    print(f"\nresults: {path.relative_to(setup_env.ROOT)} ({run['duration_s']} s)")
    if args.quick or args.set:
        say(f"{'--quick' if args.quick else '--set'}: BENCHMARKS.md left as it was")
    else:
        report.update_benchmarks_md(sections)
        say(f"updated {report.BENCHMARKS_MD.relative_to(setup_env.ROOT)}")
    failed = [(result["id"], row) for result in results for row in result["rows"] if row["errors"]]
    for scenario_id, row in failed:
        say(f"{scenario_id}: {row['name']}: {row['errors']} bad responses, e.g. {row['error_samples']}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
