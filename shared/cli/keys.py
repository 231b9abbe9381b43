"""`kaihooks secret-key` and `kaihooks secrets …`: a new master key, where the stored secrets stand after a
rotation of KAIHOOKS_SECRET_KEY, and re-sealing them under the current one (README, "Rotating the master
key"; ``shared.key_rotation``)."""

from __future__ import annotations

import argparse
import base64
import secrets
from collections.abc import Iterable
from typing import Any

from shared import key_rotation
from shared.cli.base import Context
from shared.cli.terminal import print_json
from shared.errors import KaihooksError

_SCHEMES = {1: "the master key itself (before key derivation)", 2: "a derived key"}


async def secret_key(ctx: Context, args: argparse.Namespace) -> None:
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    if args.json:
        print_json({"secret_key": key})
        return
    print(key)


def _where(key_id: str | None, standing: key_rotation.Standing) -> str:
    """Where the master key comes from: ``current``, ``old`` (KAIHOOKS_OLD_SECRET_KEYS), ``missing``."""
    if key_id is None:
        return "unrecorded"
    if key_id == standing.current_key_id:
        return "current"
    return "old" if key_id in standing.older_key_ids else "missing"


_SETTING = {"current": " (KAIHOOKS_SECRET_KEY)", "old": " (KAIHOOKS_OLD_SECRET_KEYS)", "missing": " (not configured)",
            "unrecorded": ""}


def _rows(counts: Iterable[tuple[tuple[str | None, int], int]], standing: key_rotation.Standing
          ) -> list[dict[str, Any]]:
    ordered = sorted(counts, key=lambda kv: (kv[0][0] or "", kv[0][1]))
    return [{"key_id": key_id, "key": _where(key_id, standing), "scheme": scheme, "count": n}
            for (key_id, scheme), n in ordered]


async def secrets_status(ctx: Context, args: argparse.Namespace) -> None:
    standing = await key_rotation.standing(await ctx.db(), ctx.settings)
    webhook_secrets = _rows(standing.secrets.items(), standing)
    api_keys = _rows(standing.api_keys.items(), standing)
    if args.json:
        print_json({"current_key_id": standing.current_key_id, "old_key_ids": list(standing.older_key_ids),
                    "webhook_secrets": webhook_secrets, "api_keys": api_keys})
        return
    print("webhook secrets that still sign, by the master key and scheme they are sealed with:")
    for row in webhook_secrets:
        print(f"  {row['count']:>8}  {_label(row)}")
    print("API keys, by the master key and scheme they are hashed with (re-hashed at their next use):")
    for row in api_keys:
        print(f"  {row['count']:>8}  {_label(row)}")


def _label(row: dict[str, Any]) -> str:
    key = "not recorded" if row["key_id"] is None else row["key_id"] + _SETTING[row["key"]]
    return f"{key}, {_SCHEMES.get(row['scheme'], row['scheme'])}"


async def secrets_reseal(ctx: Context, args: argparse.Namespace) -> None:
    done = await key_rotation.reseal(await ctx.db(), ctx.settings)
    if args.json:
        print_json({"resealed": done.resealed, "current": done.current, "unopenable": done.unopenable})
    else:
        print(f"re-sealed {done.resealed} webhook secret(s) under the current master key; {done.current} already "
              "were")
    if done.unopenable:
        missing = ", ".join(f"{n} under {key_id}" for key_id, n in sorted(done.unopenable.items()))
        raise KaihooksError(f"could not open {missing}: add that master key to KAIHOOKS_OLD_SECRET_KEYS and run "
                            "this again")
