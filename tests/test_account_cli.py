"""`kaihooks user set-password` and `kaihooks sessions list|revoke`: the real command against the real
database, and the sessions it ends checked through the real API."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import asyncpg
from aiohttp.test_utils import TestServer

from shared.settings import Settings
from tests.helpers import Api, Tenant
from tests.processes import ROOT, process_env


async def kaihooks(settings: Settings, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "shared.cli", *args], cwd=ROOT, input=stdin, text=True,
        capture_output=True, env=process_env(settings), timeout=60, check=False)


async def test_set_password_ends_every_session_and_the_new_password_works(
    tenant: Tenant, server: TestServer, settings: Settings, db: asyncpg.Connection
) -> None:
    async with Api(str(server.make_url(""))) as laptop:
        assert (await laptop.login(tenant.owner_email, tenant.password)).status == 200
        r = await kaihooks(settings, "user", "set-password", tenant.owner_email, "--password-stdin",
                           stdin="a brand new passphrase\n")
        assert r.returncode == 0, r.stderr
        assert "2 session(s) ended" in r.stdout
        assert (await tenant.owner.get("/v1/me")).status == 401
        assert (await laptop.get("/v1/me")).status == 401
        assert (await laptop.login(tenant.owner_email, tenant.password)).status == 401
        assert (await laptop.login(tenant.owner_email, "a brand new passphrase")).status == 200
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE action = 'user.password_changed'") >= 1


async def test_user_create_for_an_existing_user_ends_sessions_only_if_the_password_changed(
    tenant: Tenant, settings: Settings
) -> None:
    """`user create` sets the password of an existing user (the contract): a new one is a password change."""
    same = await kaihooks(settings, "user", "create", tenant.owner_email, "--business", tenant.business_id,
                          "--role", "owner", "--password-stdin", stdin=tenant.password + "\n")
    assert same.returncode == 0, same.stderr
    assert (await tenant.owner.get("/v1/me")).status == 200
    changed = await kaihooks(settings, "user", "create", tenant.owner_email, "--business", tenant.business_id,
                             "--role", "owner", "--password-stdin", "--json", stdin="another fine passphrase\n")
    assert changed.returncode == 0, changed.stderr
    assert json.loads(changed.stdout)["sessions_ended"] == 1
    assert (await tenant.owner.get("/v1/me")).status == 401


async def test_sessions_list_then_revoke_one_then_all(tenant: Tenant, server: TestServer, settings: Settings) -> None:
    async with Api(str(server.make_url(""))) as phone:
        assert (await phone.login(tenant.owner_email, tenant.password)).status == 200
        r = await kaihooks(settings, "sessions", "list", tenant.owner_email, "--json")
        assert r.returncode == 0, r.stderr
        listed = json.loads(r.stdout)
        assert len(listed) == 2 and all(s["id"].startswith("ses_") and s["ip"] == "127.0.0.1" for s in listed)
        table = await kaihooks(settings, "sessions", "list", tenant.owner_email)
        assert table.stdout.splitlines()[0].split()[:3] == ["ID", "CREATED", "EXPIRES"]
        newest = listed[0]["id"]  # newest first: the phone's
        r = await kaihooks(settings, "sessions", "revoke", tenant.owner_email, newest)
        assert r.returncode == 0, r.stderr
        assert (await phone.get("/v1/me")).status == 401
        assert (await tenant.owner.get("/v1/me")).status == 200
        r = await kaihooks(settings, "sessions", "revoke", tenant.owner_email, newest)
        assert r.returncode != 0 and "no such session" in r.stderr
        r = await kaihooks(settings, "sessions", "revoke", tenant.owner_email, "--all", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"email": tenant.owner_email, "sessions_ended": 1}
        assert (await tenant.owner.get("/v1/me")).status == 401


async def test_sessions_commands_refuse_bad_input_in_one_line(settings: Settings) -> None:
    for args, status, fragment in [
        (["sessions", "list", "nobody@example.test"], 1, "no such user"),
        (["sessions", "revoke", "nobody@example.test", "--all"], 1, "no such user"),
        (["user", "set-password", "nobody@example.test", "--password-stdin"], 1, "no such user"),
        (["sessions", "revoke", "someone@example.test"], 2, "--all"),
        (["sessions", "revoke", "someone@example.test", "ses_nope"], 2, "not a session id"),
        (["sessions", "revoke", "someone@example.test", "ses_01m8ent7x6ex6as0an1vy12zbk", "--all"], 2,
         "not allowed with"),
        (["user", "set-password", "nobody@example.test"], 2, "--password-stdin"),
    ]:
        r = await kaihooks(settings, *args, stdin="a long enough password\n")
        assert r.returncode == status, (args, r.returncode, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert fragment in r.stderr, (args, r.stderr)
