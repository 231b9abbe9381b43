"""Results: the JSON file per run, the Markdown table per scenario, and BENCHMARKS.md.

BENCHMARKS.md keeps one section per scenario between ``<!-- bench:<id> -->`` and
``<!-- /bench:<id> -->``; a run rewrites only the sections of the scenarios it ran
and leaves every other line (prose, other scenarios) as it was.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
from setup_env import ROOT

RESULTS = ROOT / "bench" / "results"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
OURS = ("bench/", "BENCHMARKS.md")

TEMPLATE = """# Benchmarks

Speed figures for kaihooks, made by `bench/` (how it works and how to add a scenario:
`bench/README.md`). The machines are shared and noisy, so every speed figure is a
**ratio against a baseline measured side by side in the same run**; absolute figures
are recorded for reference, with the machine, commit and command they came from.
Raw results of every run: `bench/results/<UTC timestamp>.json`.

Reproduce everything below (about six minutes; `--quick` for a rough check in under two
minutes that does not update this file):

```sh
.venv/bin/python bench/run.py
```

## Scenarios

| id | scenario | target | status |
|---|---|---|---|
| me | authenticated `GET /v1/me` on one API process vs a bare handler | ≥ 0.5 x bare (P6's bar) | measured below |
| limit | a bare aiohttp client signing and POSTing 1 KiB webhooks | baseline of P1-P4 | measured below |
| P1 | webhook delivery throughput vs the signed-POST limit | ≥ 0.5 x limit | measured below |
| P2 | publish → receipt latency | p50 ≤ 15 ms, p99 ≤ 100 ms | measured below |
| P3 | isolation from hanging endpoints | ≥ 0.8 x P1, p99 ≤ 2 x P2's | measured below |
| P4 | fan-out to 1,000 endpoints | within (1,000 / P1) x 1.5 | measured below |
| P5 | ingest, `POST /internal/v1/events`, batches of 500 | ≥ 0.3 x bare asyncpg `executemany` | measured below |
| P6 | reads, `GET /v1/businesses/{id}/calls?limit=20` | ≥ 0.5 x bare aiohttp handler | measured below |
| P7 | backlog 100k vs 1k | ≥ 0.9 | measured below |
| P8 | memory of API and worker | ≤ 200 MB, growth ≤ 10 % | not built yet |
"""


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)  # noqa: S603, S607
    return done.stdout if done.returncode == 0 else ""


def provenance() -> dict[str, Any]:
    """Commit, uncommitted changes outside bench/, machine and versions: what a figure depends on."""
    changed = [line[3:] for line in _git("status", "--porcelain").splitlines()
               if not line[3:].startswith(OURS)]
    cpu_model = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name in ("aiohttp", "asyncpg", "redis", "uvloop", "orjson"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "git_commit": _git("rev-parse", "--short", "HEAD").strip() or "unknown",
        "uncommitted_changes": changed,
        "cpu_model": cpu_model,
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "versions": versions,
    }


def write_json(stamp: str, run: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{stamp}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(run, indent=2) + "\n")
    tmp.replace(path)
    return path


def _cell(value: object) -> str:
    return "-" if value is None else f"{value:,}" if isinstance(value, int | float) else str(value)


def table(result: dict[str, Any]) -> str:
    rows = result["rows"]
    cpu_names = list(rows[0]["cpu_pct"])
    # A scenario may count something else than requests (P5: events, with batches as the requests).
    rates = result.get("rate_columns") or [["requests_per_s", "req/s"]]
    latency = result.get("latency_of", "")
    head = ["", *(label for _, label in rates), *(f"{q} ms{latency}" for q in ("p50", "p95", "p99")), "errors",
            *(f"{n} CPU %" for n in cpu_names)]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for row in rows:
        cells = [row["name"], *(row[key] for key, _ in rates), row["p50_ms"], row["p95_ms"], row["p99_ms"],
                 row["errors"], *(row["cpu_pct"][n] for n in cpu_names)]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    if "verdicts" in result:  # a scenario whose target is not one ratio (P2, P3, P4) or has none (limit)
        for verdict in result["verdicts"]:
            lines += ["", verdict]
    else:
        ok = "meets" if result["ratio"] >= result["target_ratio"] else "below"
        label = result.get("ratio_label", "app / bare")
        lines += ["", f"**Ratio {label}: {result['ratio']:.2f}** ({ok} the ≥ {result['target_ratio']} target); "
                  f"per round: {', '.join(f'{r:.2f}' for r in result['rounds_ratio'])}."]
    lines += ["", _cpu_per_op(result)]
    return "\n".join(lines)


def _cpu_per_op(result: dict[str, Any]) -> str:
    """CPU time per request (or batch) of each watched process group: steadier than rates on a busy box."""
    op = result.get("op_name", "request")
    unit, scale, digits = ("ms", 1.0, 1) if op == "batch" else ("µs", 1000.0, 0)
    parts = []
    for row in result["rows"]:
        rate = row["requests_per_s"]
        if not rate:
            continue
        # % of one core / (ops/s) = ms of CPU per op
        used = {name: scale * 10 * pct / rate for name, pct in row["cpu_pct"].items()
                if name not in ("box", "steal", "other") and pct is not None}
        terms = " + ".join(f"{name} {v:,.{digits}f}" for name, v in used.items() if round(v, digits))
        parts.append(f"{row['name']}: {terms} = **{sum(used.values()):,.{digits}f} {unit}**")
    return f"CPU per {op} (one core's time, by process group): " + "; ".join(parts) + "."


def get_method(result: dict[str, Any]) -> str:
    """How a GET-vs-bare-handler scenario (``me``, P6) was measured."""
    calibration = ", ".join(f"{c} → {r:,}/s" for c, r in result["calibration_requests_per_s"].items())
    t = result["timing"]
    return (f"Concurrency {result['concurrency']} (the best of the bare handler's "
            f"{calibration or 'fixed, not calibrated'}); {int(t['rounds'])} alternating round(s) of "
            f"{t['duration_s']:g} s per server after {t['warmup_s']:g} s warm-up; every response checked "
            f"(200 and the exact {result['response_bytes']}-byte body).")


def section(result: dict[str, Any], run: dict[str, Any], results_path: Path) -> str:
    p = run["provenance"]
    dirty = f" plus uncommitted changes to {len(p['uncommitted_changes'])} file(s)" if p["uncommitted_changes"] else ""
    method = result.get("method") or get_method(result)
    return "\n".join([
        f"## `{result['id']}`: {result['title']}",
        "",
        f"Measured {run['started_utc']} on commit `{p['git_commit']}`{dirty}; {p['cpu_model']}, "
        f"{p['logical_cores']} logical cores ({p['usable_cores']} usable); Python {p['python']}; "
        f"command `{run['command']}`; raw figures `{results_path.relative_to(ROOT)}`.",
        "",
        table(result),
        "",
        f"{method} CPU % is of one core per process "
        f"group; `box` is the whole machine ({p['logical_cores']} cores = {100 * (p['logical_cores'] or 1)} %; "
        f"it was {run['box_cpu_pct_before']} % busy just before the run), `other` what the box spent on "
        "anything but the processes listed (other tenants' work: noise), `steal` what the hypervisor gave "
        "elsewhere. Postgres and Redis run on the same box; the per-key rate limit is raised out of the "
        "way (`KAIHOOKS_RATE_LIMIT_PER_S=1000000`).",
    ])


def update_benchmarks_md(sections: dict[str, str]) -> None:
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else TEMPLATE
    for scenario_id, body in sections.items():
        block = f"<!-- bench:{scenario_id} -->\n{body}\n<!-- /bench:{scenario_id} -->"
        pattern = re.compile(rf"<!-- bench:{re.escape(scenario_id)} -->.*?<!-- /bench:{re.escape(scenario_id)} -->",
                             re.DOTALL)
        if pattern.search(text):
            text = pattern.sub(lambda _, block=block: block, text)
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    BENCHMARKS_MD.write_text(text)
