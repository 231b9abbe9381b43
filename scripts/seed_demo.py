"""The demo data `make run` shows: one business, its owner and an API key (made once per database, then reused:
running against another server, or after `.dev/demo.json` is gone, finds the demo owner's business again)."""

from __future__ import annotations

import secrets
from typing import Any

from shared import ids, passwords
from shared.api_key_service import create_key, key_hasher
from shared.db import create_pool
from shared.repos import api_keys, businesses, users
from shared.settings import Settings

DEMO_EMAIL = "owner@demo.kaicalls.test"


async def seed(env: dict[str, str], known: dict[str, Any] | None) -> dict[str, str]:
    settings = Settings(  # type: ignore[call-arg]
        DATABASE_URL=env["DATABASE_URL"], REDIS_URL=env["REDIS_URL"], secret_key=env["KAIHOOKS_SECRET_KEY"]
    )
    db = await create_pool(settings, min_size=1, max_size=2)
    try:
        business_id = ids.decode("biz", known["business_id"]) if known else None
        business = await businesses.get(db, business_id) if business_id else None
        if business is None:  # .dev/demo.json is of another database (or gone): this one's demo owner's business
            known = None
            found = await users.credentials(db, DEMO_EMAIL)
            owned = await users.memberships(db, found[0].id) if found else []
            business = owned[0].business if owned else None
        if business is None:
            business = await businesses.create(db, "Demo Plumbing Co.")
        password = known["password"] if known else secrets.token_urlsafe(12)
        async with db.acquire() as conn:
            await users.upsert_with_memberships(
                conn, DEMO_EMAIL, await passwords.hash_password_async(password), [business.id], "owner"
            )
        api_key = known.get("api_key") if known else None
        if api_key is None or await api_keys.by_hashes(db, key_hasher(settings).candidates(api_key)) is None:
            created = await create_key(
                db, settings, business_id=business.id, name="Demo key", scopes=None, expires_at=None,
                actor_user_id=None, ip=None,
            )
            api_key = created.secret
    finally:
        await db.close()
    return {"business_id": business.public_id, "email": DEMO_EMAIL, "password": password, "api_key": api_key}
