"""Prometheus metrics (prometheus-client's default registry: one set per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DELIVERIES = Counter(
    "kaihooks_deliveries_total", "Delivery attempts by what they led to",
    ["outcome"],  # succeeded | retrying | failed | deferred (breaker open, no attempt spent)
)
ATTEMPT_SECONDS = Histogram(
    "kaihooks_attempt_duration_seconds", "Time from sending a webhook to its answer (or failure)",
    ["result"],  # 2xx | 3xx | 4xx | 5xx | error
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
QUEUE_DEPTH = Gauge("kaihooks_queue_depth", "Pending deliveries that are due now (all workers)")
IN_FLIGHT = Gauge("kaihooks_in_flight", "Webhook requests this worker has in flight")
HELD = Gauge("kaihooks_held_deliveries",
             "Deliveries this worker holds (queued, in flight, or waiting for their result to be written)")
OLDEST_HELD = Gauge("kaihooks_oldest_held_seconds", "How long this worker has held its oldest delivery")
CLAIMED = Counter("kaihooks_deliveries_claimed_total", "Deliveries this worker claimed")
WRITER_FLUSH_FAILURES = Counter(
    "kaihooks_writer_flush_failures_total", "Result-writer flushes that failed",
    ["reason"],  # unavailable (Postgres away: the batch is kept) | rejected (a bad row: the batch is split)
)
RESULTS_DROPPED = Counter(
    "kaihooks_results_dropped_total", "Delivery results not written",
    ["reason"],  # vanished (the delivery was deleted with its endpoint) | rejected (Postgres refused the row)
)
SWEPT = Counter("kaihooks_sweeper_reenqueued_total", "Events stored without deliveries, fanned out by the sweeper")
ENDPOINTS_DISABLED = Counter("kaihooks_endpoints_disabled_total", "Endpoints disabled automatically", ["reason"])
ENDPOINT_BACKLOG = Gauge("kaihooks_endpoint_backlog", "Pending deliveries of the endpoints furthest behind",
                         ["endpoint_id"])
ENDPOINT_LAG = Gauge("kaihooks_endpoint_lag_seconds", "Age of the oldest pending delivery, same endpoints",
                     ["endpoint_id"])
ENDPOINT_SUCCESS = Gauge("kaihooks_endpoint_success_ratio",
                         "Share of 2xx attempts in the last 5 minutes, busiest endpoints",
                         ["endpoint_id"])
ENDPOINT_P95 = Gauge("kaihooks_endpoint_p95_seconds",
                     "95th percentile attempt time in the last 5 minutes, same endpoints",
                     ["endpoint_id"])
KEY_AUTH_FAILURES = Counter("kaihooks_key_auth_failures_total", "Requests refused for a bad, unknown or revoked key")
RATE_LIMITED = Counter("kaihooks_rate_limited_total", "Key-authenticated requests refused by the rate limit")


def result_class(status: int | None) -> str:
    return f"{status // 100}xx" if status is not None else "error"
REDIS_FAILURES = Counter(
    "kaihooks_redis_failures_total",
    "Redis commands that failed while the process carried on in its degraded mode (alert on any rate)",
    ["use",  # key_check | sign_in | session_rate | data_version | request
     "kind"],  # unreachable (connection, timeout) | error (Redis answered an error: OOM, READONLY, ...)
)
SIGN_INS = Counter(
    "kaihooks_sign_ins_total", "Dashboard sign-in attempts by how they ended",
    ["outcome"],  # succeeded | wrong | throttled | busy (password checks at their bound) | unavailable
)
