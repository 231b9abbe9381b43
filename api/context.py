"""Typed keys for what the application holds: settings, pools and clients."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web
from redis.asyncio import Redis

from api.keyauth import KeyVerifier
from api.pagecache import PageCache
from api.ratelimit import SessionRateLimit
from shared.settings import Settings
from shared.sign_in import SignIns

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", asyncpg.Pool)
REDIS = web.AppKey("redis", Redis)
KEYS: web.AppKey[KeyVerifier] = web.AppKey("key_verifier")
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi")
PAGES: web.AppKey[PageCache] = web.AppKey("pages")
SIGN_INS: web.AppKey[SignIns] = web.AppKey("sign_ins")
SESSION_LIMIT: web.AppKey[SessionRateLimit] = web.AppKey("session_rate_limit")
