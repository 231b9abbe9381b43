"""Typed keys for what the application holds: settings, pools and clients."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web
from redis.asyncio import Redis

from shared.settings import Settings

if TYPE_CHECKING:
    pass

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", asyncpg.Pool)
REDIS = web.AppKey("redis", Redis)
KEYS = web.AppKey("key_verifier", "KeyVerifier")
OPENAPI = web.AppKey("openapi", dict)
