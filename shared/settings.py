"""One settings object for every process, read from the environment only."""

from __future__ import annotations

import base64
import binascii
from functools import cached_property
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.redis_keys import REVOKED_TTL_S


def _parse_duration_s(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip()
    for suffix in ("ms", "s", "m", "h", "d"):
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(text[: -len(suffix)]) * units[suffix]
    raise ValueError(f"not a duration: {text!r} (use e.g. 5s, 30m, 2h)")


class Settings(BaseSettings):
    """Everything a process needs to run; policy values carry their unit in the name."""

    model_config = SettingsConfigDict(env_prefix="KAIHOOKS_", extra="ignore", frozen=True)

    database_url: str = Field(validation_alias=AliasChoices("DATABASE_URL"))
    redis_url: str = Field(validation_alias=AliasChoices("REDIS_URL"))
    port: int = Field(8080, validation_alias=AliasChoices("PORT"), ge=1, le=65535)
    listen_host: str = "0.0.0.0"  # KAIHOOKS_LISTEN_HOST: the address the API binds
    secret_key: str = Field(repr=False)
    internal_tokens: Annotated[tuple[str, ...], NoDecode] = Field(default=(), repr=False)
    allow_private_targets: bool = False
    retry_schedule: Annotated[tuple[float, ...], NoDecode] = (
        5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400,
    )
    delivery_timeout: float = Field(10.0, gt=0, le=300)
    # Older master keys, base64, comma-separated: webhook secrets sealed under them still open.
    old_secret_keys: Annotated[tuple[str, ...], NoDecode] = Field(default=(), repr=False)
    # Peers (CIDRs, comma-separated) whose X-Forwarded-For is believed: the right-most address in it that is
    # not one of them is the client. From any other peer the header is ignored. None by default.
    trusted_proxies: Annotated[tuple[IPv4Network | IPv6Network, ...], NoDecode] = ()
    # Strict-Transport-Security max-age on every response (not sent with KAIHOOKS_DEV; 0: never sent).
    hsts_max_age_s: int = Field(365 * 86400, ge=0)
    access_log: bool = False  # one log line per request (method, path, status, time, client address)
    log_level: Literal["debug", "info", "warning", "error"] = "info"  # the least severe level logged

    # Delivery.
    endpoint_max_in_flight: int = Field(10, ge=1)  # concurrent requests to one endpoint, per worker
    # Concurrent requests per worker. Measured: 1000 -> 128 cut worker CPU per delivery by a fifth (fewer
    # sockets to juggle); 256 -> 128 raised P1 from 0.36-0.44 to 0.46-0.48 x the limit with P3 still met
    # (0.89, 1.86: BENCHMARKS.md); slow endpoints are capped per lane anyway.
    max_in_flight: int = Field(128, ge=1)
    max_response_bytes: int = Field(64 * 1024, ge=1024)  # read at most this much of a response
    retry_after_cap_s: int = Field(24 * 3600, ge=1)
    replay_schedule: Annotated[tuple[float, ...], NoDecode] = (60, 300, 1800)
    lease_s: float = Field(15.0, gt=1)  # a worker's hold on a delivery; renewed while it holds it
    disable_after_failing_s: int = Field(5 * 86400, ge=60)
    circuit_failures: int = Field(5, ge=1)  # consecutive failures that open an endpoint's breaker
    circuit_timeouts: int = Field(2, ge=1)  # ...or consecutive timeouts (a hanging endpoint ties up a slot each)
    circuit_open_s: float = Field(30.0, gt=0)  # how long deliveries to it are deferred, doubling to 10 min
    worker_poll_s: float = Field(0.5, gt=0)  # how often a worker looks for due retries (new work: notified)
    queue_poll_s: float = Field(0.5, gt=0)  # how soon a due cron starts (how often arq polls its Redis queue)
    queue_name: str = "arq:queue"  # the arq queue of the crons (give each deployment sharing a Redis its own)
    # Attempts, settled deliveries and events older than this many days are deleted (hourly, in batches).
    retention_days: int = Field(30, ge=1)
    endpoint_metrics_s: float = Field(60.0, gt=0)  # how often a worker refreshes the per-endpoint gauges
    metrics_port: int = Field(0, ge=0, le=65535)  # the worker's /metrics port; 0: not served
    dev: bool = False
    # The address the worker's /metrics binds. It has no authentication: loopback unless told otherwise.
    metrics_host: str = "127.0.0.1"

    # Sessions and sign-in.
    session_ttl_s: int = Field(12 * 3600, ge=60)
    login_max_failures: int = Field(10, ge=1)  # per email
    login_max_failures_per_ip: int = Field(10, ge=1)
    login_window_s: int = Field(15 * 60, ge=1)
    # argon2 checks one process runs at once (each takes about 64 MiB and tens of ms of CPU), and how many
    # sign-ins may wait for one; past that, sign-in answers 503 with Retry-After.
    password_checks_max_in_flight: int = Field(4, ge=1)
    password_checks_max_waiting: int = Field(16, ge=0)
    # Requests one dashboard session may make (GCRA, like an API key's limit).
    session_rate_limit_per_s: float = Field(20.0, gt=0)
    session_rate_limit_burst: int = Field(60, ge=1)
    sessions_max_per_user: int = Field(10, ge=1)  # a new sign-in past this ends the user's oldest session

    # API keys.
    rate_limit_per_s: float = Field(50.0, gt=0)
    rate_limit_burst: int = Field(100, ge=1)
    key_cache_ttl_s: float = Field(60.0, ge=0)
    key_touch_interval_s: int = Field(60, ge=1)

    # Request bodies.
    max_body_bytes_v1: int = 1024 * 1024
    max_body_bytes_internal: int = 8 * 1024 * 1024
    # JSON nested deeper than this is refused (422) on every route. At most 200: orjson parses 1024 levels
    # and writes 255, and an event's data is written again when it is stored.
    max_json_depth: int = Field(64, ge=2, le=200)

    db_pool_min_size: int = Field(2, ge=0)
    db_pool_max_size: int = Field(10, ge=1)

    # Limits on what a business can grow (docs/security.md).
    max_endpoints_per_business: int = Field(1000, ge=1)
    # Secrets that sign at once: the current one and those still in their grace period after a rotation (each
    # adds a signature to every webhook). At least 2, so that a rotation with a grace period is possible.
    max_live_secrets_per_endpoint: int = Field(3, ge=2, le=10)
    # The most deliveries one recover run re-sends (its window is also at most KAIHOOKS_RETENTION_DAYS long).
    max_recover_deliveries: int = Field(100_000, ge=1)

    @field_validator("secret_key")
    @classmethod
    def _secret_key_is_32_bytes(cls, value: str) -> str:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("KAIHOOKS_SECRET_KEY must be base64 (run `kaihooks secret-key`)") from None
        if len(raw) != 32:
            raise ValueError("KAIHOOKS_SECRET_KEY must decode to 32 bytes (run `kaihooks secret-key`)")
        return value

    @field_validator("internal_tokens", "old_secret_keys", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(t.strip() for t in value.split(",") if t.strip())
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        parts = value.split(",") if isinstance(value, str) else value
        if not isinstance(parts, list | tuple):
            return value
        networks = []
        for part in parts:
            text = str(part).strip()
            if not text:
                continue
            try:
                networks.append(ip_network(text, strict=False))
            except ValueError:
                raise ValueError(f"KAIHOOKS_TRUSTED_PROXIES: not an address or CIDR: {text!r}") from None
        return tuple(networks)

    @field_validator("log_level", mode="before")
    @classmethod
    def _known_log_level(cls, value: object) -> object:
        text = value.strip().lower() if isinstance(value, str) else value
        if text not in ("debug", "info", "warning", "error"):
            raise ValueError(f"KAIHOOKS_LOG_LEVEL must be debug, info, warning or error, not {value!r}")
        return text

    @field_validator("key_cache_ttl_s")
    @classmethod
    def _key_cache_within_revocation(cls, value: float) -> float:
        # A deleted key is refused by other processes only while its revocation marker lives: a cached
        # copy must expire before the marker does, or the key would work again on that process.
        if value > REVOKED_TTL_S:
            raise ValueError(f"KAIHOOKS_KEY_CACHE_TTL_S must be at most {REVOKED_TTL_S} (seconds a deleted key's "
                             "revocation marker lives; a cached key must not outlive it)")
        return value

    @field_validator("retry_schedule", "replay_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(_parse_duration_s(part) for part in value.split(",") if part.strip())
        return value

    @property
    def retry_deadline_s(self) -> float:
        """A delivery is failed at the latest this long after its first attempt was due (the schedule's total)."""
        return float(sum(self.retry_schedule))

    @property
    def replay_deadline_s(self) -> float:
        """...and this long after a retry, recover or test send made it due."""
        return float(sum(self.replay_schedule))

    @cached_property
    def secret_key_bytes(self) -> bytes:
        return base64.b64decode(self.secret_key)

    @cached_property
    def old_secret_keys_bytes(self) -> tuple[bytes, ...]:
        return tuple(base64.b64decode(k) for k in self.old_secret_keys)


def load_settings() -> Settings:
    """Settings from the environment, or exit with one line naming each bad variable."""
    try:
        return Settings()  # type: ignore[call-arg]
    except ValidationError as exc:
        parts = []
        for err in exc.errors(include_url=False):
            field = str(err["loc"][0]) if err["loc"] else "?"
            name = field if field.isupper() else f"KAIHOOKS_{field.upper()}"
            msg = "is required" if err["type"] == "missing" else err["msg"].removeprefix("Value error, ")
            parts.append(msg if msg.startswith(name) else f"{name} {msg}")
        raise SystemExit("kaihooks: error: configuration: " + "; ".join(parts)) from None
