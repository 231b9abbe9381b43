"""`kaihooks secrets …`: where the stored secrets stand after a rotation of KAIHOOKS_SECRET_KEY, and
re-sealing them under the current one (README, "Rotating the master key")."""

from __future__ import annotations

import argparse
from typing import Any

import asyncpg

from shared import key_rotation
from shared.errors import KaihooksError
from shared.settings import Settings

_SCHEMES = {1: "the master key itself (before key derivation)", 2: "a derived key"}


def _which(key_id: str | None, standing: key_rotation.Standing) -> str:
    if key_id is None:
        return "not recorded"
    if key_id == standing.current_key_id:
        return f"{key_id} (KAIHOOKS_SECRET_KEY)"
    if key_id in standing.older_key_ids:
        return f"{key_id} (KAIHOOKS_OLD_SECRET_KEYS)"
    return f"{key_id} (not configured)"


async def secrets_status(db: asyncpg.Pool, settings: Settings, args: argparse.Namespace) -> None:
    standing = await key_rotation.standing(db, settings)
    print("webhook secrets that still sign, by the master key and scheme they are sealed with:")
    for (key_id, scheme), n in sorted(standing.secrets.items()):
        print(f"  {n:>8}  {_which(key_id, standing)}, {_SCHEMES.get(scheme, scheme)}")
    print("API keys, by the master key and scheme they are hashed with (re-hashed at their next use):")
    for (key_hash_id, scheme), n in sorted(standing.api_keys.items(), key=lambda kv: (kv[0][0] or "", kv[0][1])):
        print(f"  {n:>8}  {_which(key_hash_id, standing)}, {_SCHEMES.get(scheme, scheme)}")


async def secrets_reseal(db: asyncpg.Pool, settings: Settings, args: argparse.Namespace) -> None:
    done = await key_rotation.reseal(db, settings)
    print(f"re-sealed {done.resealed} webhook secret(s) under the current master key; {done.current} already were")
    if done.unopenable:
        missing = ", ".join(f"{n} under {key_id}" for key_id, n in sorted(done.unopenable.items()))
        raise KaihooksError(f"could not open {missing}: add that master key to KAIHOOKS_OLD_SECRET_KEYS and run "
                            "this again")


def register(sub: Any) -> None:
    """Add the secrets commands to the `kaihooks` parser (run like the on-call commands, with a pool)."""
    secrets = sub.add_parser("secrets", help="webhook secrets and API keys after a master key rotation"
                             ).add_subparsers(dest="action", required=True)
    secrets.add_parser("status", help="what is stored under which master key").set_defaults(handler=secrets_status)
    secrets.add_parser("reseal", help="re-seal webhook secrets under KAIHOOKS_SECRET_KEY").set_defaults(
        handler=secrets_reseal)
