"""The quick reliability drill (``chaos/run.py --quick``, as ``make chaos QUICK=1``) inside ``make test``.

One run (about two minutes) is shared by the tests below: its own Postgres and Redis, two API processes, two
workers and the scripted receivers, a steady load of events while a worker and an API process are SIGKILLed,
Redis restarts empty and Postgres stops for 10 s; and its hostile phase: hostile receivers (random statuses,
garbage Retry-After, huge headers, dripping bodies, resets mid-body, silence, 410) and the churn of endpoints
(deleted, disabled and enabled, re-pointed, re-keyed, recovered) while deliveries to them are in flight.
Each test asserts one promise on the run's ledger, so a regression names the promise it broke. The drill's
summary is printed with ``-s``; see chaos/run.py, chaos/ledger.py and chaos/churn.py for how each figure is
measured.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DRILL_TIMEOUT_S = 300  # the quick drill bounds itself to about 215 s; this is a backstop


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    out = tmp_path_factory.mktemp("chaos") / "report.json"
    drill = subprocess.Popen([sys.executable, "chaos/run.py", "--quick", "--report", str(out)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = drill.communicate(timeout=DRILL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        drill.send_signal(signal.SIGTERM)  # the drill stops everything it started on SIGTERM
        try:
            output, _ = drill.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            drill.kill()
            output, _ = drill.communicate()
        pytest.fail(f"the quick drill did not finish within {DRILL_TIMEOUT_S} s:\n{output[-4000:]}")
    print(output[-3000:])
    if not out.exists():
        pytest.fail(f"the quick drill ended ({drill.returncode}) without a report:\n{output[-4000:]}")
    yield json.loads(out.read_text())


def failures(report: dict[str, Any], *words: str) -> list[str]:
    return [f for f in report["failures"] if any(w in f for w in words)]


def test_every_acknowledged_event_reaches_every_matching_endpoint(report: dict[str, Any]) -> None:
    assert report["events_acknowledged"] > 1000, report["events_acknowledged"]
    assert report["api"]["events_never_acknowledged"] == 0
    assert report["lost"] == 0, failures(report, "lost")
    assert report["misdelivered"] == 0 and report["deliveries_for_non_matching_endpoints"] == 0
    assert report["received_unknown_events"] == 0
    assert report["bad_signatures"] == 0
    assert report["events_never_fanned_out"] == 0
    # The gone endpoint (410) was disabled mid-load, and nothing was sent to it afterwards.
    assert report["gone_endpoint"].get("received", 0) > 0
    assert report["gone_endpoint"].get("not sent: fanned out after the disable", 0) > 0
    assert report["gone_requests_after_disable"] == 0


def test_the_api_never_answers_500_only_503_problems_while_postgres_is_down(report: dict[str, Any]) -> None:
    api = report["api"]
    assert api["answers_500"] == 0 and api["unhandled_errors_logged"] == 0, failures(report, "5xx")
    assert failures(report, "bad API answers") == []
    assert api["answers_503"] > 0, "Postgres was stopped, yet no request saw a 503"
    assert api["answers_503_outside_postgres_outages"] == 0, api


def test_nothing_is_stuck_and_duplicates_are_only_requests_in_flight_at_a_kill(report: dict[str, Any]) -> None:
    assert report["unsettled"] == 0, failures(report, "not settled")
    assert report["duplicates_unexplained"] == 0, report["duplicate_samples"]
    assert report["stuck_at_end"] == 0, failures(report, "past their due time")
    assert report["overdue_during_run"]["samples_with_deliveries_over_60s"] == 0, report["overdue_during_run"]
    assert failures(report, "did not drain") == []


def test_memory_of_every_process_stays_flat(report: dict[str, Any]) -> None:
    compared = {name: rss for name, rss in report["rss_mb"].items() if "growth" in rss}
    assert len(compared) >= 4, report["rss_mb"]  # both API processes and both workers, at least once each
    assert failures(report, "RSS") == [], report["rss_mb"]


def test_the_drill_ran_every_fault(report: dict[str, Any]) -> None:
    kinds = {f["kind"] for f in report["faults"]}
    assert kinds >= {"worker_kill", "api_kill", "redis_restart", "postgres_stop", "gone_switch"}, kinds
    assert all(f["back_after_s"] is not None for f in report["faults"]), report["faults"]
    assert all(n > 0 for n in report["receiver_faults"].values()), report["receiver_faults"]


HOSTILE_KINDS = ("random", "badretry", "huge", "drip", "midreset", "silent", "g410")
CHURN_ACTIONS = ("delete", "disable", "enable", "repoint", "rotate", "recover", "recover_missed")


def check(report: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(report["checks"][name])


def test_the_hostile_phase_and_the_churn_ran(report: dict[str, Any]) -> None:
    phase = report["hostile_phase"]
    assert phase["hostile_from_s"] is not None and phase["hostile_until_s"] is not None, phase
    for kind in HOSTILE_KINDS:
        requests = phase["by_kind"][kind].get("requests", {})
        hostile = {k: n for k, n in requests.items() if not k.startswith("ok:")}
        assert hostile, (kind, requests)  # the receiver was hostile to it at least once
    done = {action: outcomes.get("done", 0) for action, outcomes in phase["churn"]["by_action"].items()}
    assert all(done.get(action, 0) > 0 for action in CHURN_ACTIONS), phase["churn"]["by_action"]
    assert any(n > 0 for n in phase["churn"]["requests_in_flight_at_deletes"]), phase["churn"]
    assert check(report, "churn_actions_answered")["passed"], failures(report, "churn_actions_answered")


def test_every_delivery_settles_by_its_deadline(report: dict[str, Any]) -> None:
    deadline = check(report, "settled_by_deadline")
    assert deadline["checked"] > 1000, deadline
    assert deadline["passed"], failures(report, "settled_by_deadline", "did not drain")


def test_churn_loses_nothing_and_every_change_takes_effect(report: dict[str, Any]) -> None:
    assert report["lost"] == 0, failures(report, "lost")
    assert report["queued_while_disabled"] == 0, failures(report, "while their endpoint was disabled")
    assert check(report, "churn_obeyed")["passed"], failures(report, "churn_obeyed")
    assert report["churn_endpoints"].get("received", 0) > 0, report["churn_endpoints"]
    assert report["bad_signatures"] == 0  # a rotated secret's predecessor signs on for its grace period only
    assert report["api"]["churn_answers_5xx"] == 0, report["api"]["churn_by_status"]


def test_no_worker_wedges_and_every_worker_keeps_claiming(report: dict[str, Any]) -> None:
    for name in ("held_bounded", "oldest_held_bounded", "writer_recovers", "workers_keep_claiming",
                 "healthy_receipts_never_stop", "no_crashed_tasks"):
        assert check(report, name)["passed"], failures(report, f"[{name}]")
    lives = report["hostile_phase"]["workers"]["per_life"]
    assert any("max_held" in life for life in lives.values()), lives  # the workers' /metrics were read
