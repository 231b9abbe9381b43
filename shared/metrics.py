"""Prometheus metrics (prometheus-client's default registry: one set per process)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric

# ---- the API -----------------------------------------------------------------------------------------------------

# Labels are bounded: the route is its template (``unmatched`` when none matched), the method one of the
# standard ones (``other`` for any other). The histogram has no status label: the counter gives error rates,
# and latency per status would multiply the series for little (a 401 or 404 is answered in microseconds).
HTTP_REQUESTS = Counter("kaihooks_http_requests_total", "API requests by what the client got",
                        ["method", "route", "status"])
HTTP_SECONDS = Histogram(
    "kaihooks_http_request_duration_seconds", "Time from a request reaching the application to its response",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
KEY_AUTH_FAILURES = Counter("kaihooks_key_auth_failures_total", "Requests refused for a bad, unknown or revoked key")
RATE_LIMITED = Counter("kaihooks_rate_limited_total", "Key-authenticated requests refused by the rate limit")
REDIS_FAILURES = Counter(
    "kaihooks_redis_failures_total",
    "Redis commands that failed while the process carried on in its degraded mode (alert on any rate)",
    ["use",  # key_check | sign_in | session_rate | data_version | wake (with the bump) | request
     "kind"],  # unreachable (connection, timeout) | error (Redis answered an error: OOM, READONLY, ...)
)
SIGN_INS = Counter(
    "kaihooks_sign_ins_total", "Dashboard sign-in attempts by how they ended",
    ["outcome"],  # succeeded | wrong | throttled | busy (password checks at their bound) | unavailable
)

# ---- a worker: its own work --------------------------------------------------------------------------------------

ATTEMPTS = Counter(
    "kaihooks_delivery_attempts_total", "Webhook requests sent, by what they led to for their delivery",
    ["outcome"],  # succeeded | retrying | failed (its last attempt, or a 4xx that is not retried)
)
DEFERRALS = Counter(
    "kaihooks_delivery_deferrals_total", "Deliveries handed back unsent, due later (no attempt spent)",
    # paused (breaker open or Retry-After) | slowed (more queued than the endpoint takes now) | no_secret
    # (sealed under a master key this process lacks) | stopping (the worker is) | unsettled (an error of ours)
    ["reason"],
)
FAILED_UNSENT = Counter(
    "kaihooks_deliveries_failed_unsent_total", "Deliveries failed without a request",
    ["reason"],  # endpoint_disabled | deadline_passed (while the endpoint was paused)
)
ATTEMPT_SECONDS = Histogram(
    "kaihooks_attempt_duration_seconds", "Time from sending a webhook to its answer (or failure)",
    ["result"],  # 2xx | 3xx | 4xx | 5xx | error
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
IN_FLIGHT = Gauge("kaihooks_in_flight", "Webhook requests this worker has in flight")
HELD = Gauge("kaihooks_held_deliveries",
             "Deliveries this worker holds (queued, in flight, or waiting for their result to be written)")
OLDEST_HELD = Gauge("kaihooks_oldest_held_seconds", "How long this worker has held its oldest delivery")
CLAIMED = Counter("kaihooks_deliveries_claimed_total", "Deliveries this worker claimed")
CLAIMS = Counter(
    "kaihooks_claims_total", "Claim queries this worker ran, by what they returned",
    ["result"],  # rows (some due deliveries) | empty (none: nothing due, or all held by other workers)
)
WRITER_FLUSH_FAILURES = Counter(
    "kaihooks_writer_flush_failures_total", "Result-writer flushes that failed",
    ["reason"],  # unavailable (Postgres away: the batch is kept) | rejected (a bad row: the batch is split)
)
RESULTS_DROPPED = Counter(
    "kaihooks_results_dropped_total", "Delivery results not written",
    ["reason"],  # vanished (the delivery was deleted with its endpoint) | rejected (Postgres refused the row)
)
SWEPT = Counter("kaihooks_sweeper_fanned_out_events_total",
                "Events stored without their deliveries that the sweeper fanned out")
ENDPOINTS_DISABLED = Counter("kaihooks_endpoints_disabled_total", "Endpoints disabled automatically", ["reason"])

# ---- the whole database, measured by one worker ------------------------------------------------------------------

# Not registered by themselves: ``DATABASE_WIDE`` exports them from the one worker elected to measure them
# (``dispatcher.gauges``), so that a sum or an alert over every worker counts each figure once.
QUEUE_DEPTH = Gauge("kaihooks_queue_depth", "Pending deliveries that are due now (all workers)", registry=None)
ENDPOINT_BACKLOG = Gauge("kaihooks_endpoint_backlog", "Pending deliveries of the endpoints furthest behind",
                         ["endpoint_id"], registry=None)
ENDPOINT_LAG = Gauge("kaihooks_endpoint_lag_seconds", "Age of the oldest pending delivery, same endpoints",
                     ["endpoint_id"], registry=None)
ENDPOINT_SUCCESS = Gauge("kaihooks_endpoint_success_ratio",
                         "Share of 2xx attempts in the last 5 minutes, busiest endpoints",
                         ["endpoint_id"], registry=None)
ENDPOINT_P95 = Gauge("kaihooks_endpoint_p95_seconds",
                     "95th percentile attempt time in the last 5 minutes, same endpoints",
                     ["endpoint_id"], registry=None)


class DatabaseWide:
    """The database-wide gauges, exported only while this process measures them."""

    def __init__(self, *gauges: Gauge) -> None:
        self.gauges = gauges
        self.exported = False

    def describe(self) -> Iterable[Metric]:
        for gauge in self.gauges:
            yield from gauge.describe()

    def collect(self) -> Iterable[Metric]:
        if self.exported:
            for gauge in self.gauges:
                yield from gauge.collect()

    def stop(self) -> None:
        """No longer exported, and forgotten (a later election starts from fresh figures)."""
        self.exported = False
        QUEUE_DEPTH.set(0)
        for gauge in self.gauges:
            gauge.clear()


DATABASE_WIDE = DatabaseWide(QUEUE_DEPTH, ENDPOINT_BACKLOG, ENDPOINT_LAG, ENDPOINT_SUCCESS, ENDPOINT_P95)
REGISTRY.register(DATABASE_WIDE)


def result_class(status: int | None) -> str:
    return f"{status // 100}xx" if status is not None else "error"
