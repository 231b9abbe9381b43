"""`make test` on a machine without a browser: the browser the dashboard tests need is found, or the run stops at
once with one line saying what to install. And the Procfile's release step is what `make run` migrates with."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import devenv  # noqa: E402


def test_a_missing_named_browser_stops_the_run_with_one_line_saying_what_to_install(tmp_path: Path) -> None:
    env = {**os.environ, "KAIHOOKS_CHROMIUM": str(tmp_path / "no-such-chrome")}
    done = subprocess.run([sys.executable, "scripts/devenv.py", "test", "tests/test_dashboard.py"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert "no-such-chrome is not an executable file" in line
    assert "apt-get install chromium" in line and "playwright install chromium" in line


def test_a_chrome_on_the_path_is_found(tmp_path: Path) -> None:
    chrome = tmp_path / "google-chrome"
    chrome.write_text("#!/bin/sh\n")
    chrome.chmod(0o755)
    assert devenv.find_browser({"PATH": str(tmp_path)}) == str(chrome)


def test_the_named_browser_comes_first(tmp_path: Path) -> None:
    named, other = tmp_path / "mine", tmp_path / "chromium"
    for path in (named, other):
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    assert devenv.find_browser({"PATH": str(tmp_path), "KAIHOOKS_CHROMIUM": str(named)}) == str(named)


@pytest.mark.parametrize(("args", "needed"), [
    ([], True),
    (["-q", "-p", "no:cacheprovider"], True),
    (["tests"], True),
    (["tests/test_dashboard.py::test_x"], True),
    (["tests", "--ignore=tests/test_dashboard.py"], False),
    (["tests/test_outcome.py", "-k", "retry"], False),
])
def test_the_browser_is_looked_for_only_when_the_dashboard_tests_run(args: list[str], needed: bool) -> None:
    cwd = Path.cwd()
    os.chdir(ROOT)
    try:
        assert devenv.needs_browser(args) is needed
    finally:
        os.chdir(cwd)


def test_the_release_step_is_the_migration() -> None:
    assert devenv.procfile() == {"release": "kaihooks migrate", "web": "python -m api",
                                 "worker": "python -m dispatcher"}


def test_two_test_runs_on_one_redis_get_dbs_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    from contextlib import ExitStack

    monkeypatch.delenv("REDIS_URL", raising=False)
    url = os.environ.get("KAIHOOKS_TEST_REDIS_URL", "redis://127.0.0.1:6379/2")
    with ExitStack() as first, ExitStack() as second:
        mine, theirs = devenv.test_redis_db(first, url), devenv.test_redis_db(second, url)
        assert mine != theirs and {mine.rpartition("/")[2], theirs.rpartition("/")[2]}.isdisjoint({"0", "1", "3"})
        second.close()
        assert devenv.test_redis_db(second, url) == theirs  # given back at exit, taken again
