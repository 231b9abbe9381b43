"""Repro: a worker's result writer stops for good when Postgres shuts down under it.

    .venv/bin/python chaos/repro_writer_shutdown.py      # exit 1: reproduced; 0: the writer survived 20 stops

Starts a Postgres of its own (chaos/servers.py), migrates it, runs ``dispatcher.record.ResultWriter`` against a
pool made as the worker makes it, feeds it deferrals at the rate of a busy worker, and stops Postgres
(``fast``, as ``pg_ctl stop -m fast`` or a deploy's restart does) for a second, up to 20 times. When a flush
is in flight at the shutdown, asyncpg may report the dying connection as ``InternalClientError`` ("cannot
switch to state …; another operation (2) is in progress"). ``ResultWriter.flush`` catches only ``OSError``,
``PostgresError`` and ``InterfaceError``, so the error escapes: the batch it had taken is dropped and
``ResultWriter.run`` ends; nothing the worker sends afterwards is recorded until it stops. In the drill this
shows as deliveries received but still pending, re-sent after their leases lapse (duplicates no kill
explains), and pending past their due time.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

from servers import Postgres  # noqa: E402

from dispatcher.record import ResultWriter  # noqa: E402
from shared.db import create_pool  # noqa: E402
from shared.repos.delivery_results import Deferral  # noqa: E402
from shared.settings import Settings  # noqa: E402

STOPS = 20


async def main() -> int:
    run_dir = Path(tempfile.mkdtemp(prefix="kaihooks-repro-"))
    pg = Postgres(run_dir)
    try:
        pg.init()
        pg.start()
        await pg.wait_ready()
        await pg.create_database()
        env = {**os.environ, "DATABASE_URL": pg.url, "REDIS_URL": "redis://127.0.0.1:1/0",
               "KAIHOOKS_SECRET_KEY": base64.b64encode(os.urandom(32)).decode()}
        await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "shared.cli", "migrate"], env=env, cwd=ROOT,
                                check=True, capture_output=True)
        settings = Settings(DATABASE_URL=pg.url, REDIS_URL=env["REDIS_URL"],  # type: ignore[call-arg]
                            secret_key=env["KAIHOOKS_SECRET_KEY"])
        db = await create_pool(settings, min_size=2, max_size=10)
        writer = ResultWriter(db, "repro-owner")
        running = asyncio.create_task(writer.run())

        async def feed() -> None:
            while True:
                for _ in range(50):
                    writer.add(Deferral(uuid.uuid4(), datetime.now(UTC)))
                await asyncio.sleep(0.002)

        feeder = asyncio.create_task(feed())
        try:
            for stop in range(1, STOPS + 1):
                await asyncio.sleep(0.5)
                await asyncio.to_thread(pg.stop, "fast")
                await asyncio.sleep(1)
                pg.start()
                await pg.wait_ready()
                await asyncio.sleep(2)  # the writer has had time to reconnect and catch up
                if running.done():
                    print(f"reproduced at stop {stop}: ResultWriter.run ended with {running.exception()!r}; "
                          f"{writer.pending} results are waiting and will not be written")
                    return 1
                print(f"stop {stop}: the writer survived ({writer.pending} waiting)", flush=True)
        finally:
            feeder.cancel()
            running.cancel()
            await asyncio.gather(feeder, running, return_exceptions=True)
            await db.close()
        print(f"not reproduced in {STOPS} stops")
        return 0
    finally:
        pg.stop("immediate")
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
