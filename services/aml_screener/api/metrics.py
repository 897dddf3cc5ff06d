"""The pre-screen API's metrics, in one object against a registry tests can replace.

Labels are closed sets: the endpoint (route name), the outcome of the request (ok or an error code), the verdict
and action of each screening; never an address, a key or an event id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector

from aml_screener.screener.metrics import PolicyMetrics

ENDPOINTS = ("addresses", "withdrawal")
# Request outcomes (label values): "ok" or the error code of the answer (models.ErrorAnswer.error).
OUTCOMES = (
    "ok",
    "invalid_request",
    "unauthorized",
    "payload_too_large",
    "unsupported_media_type",
    "watchlist_unavailable",
    "not_recorded",
    "error",
)
# From 100 us: a single-address check takes a few hundred microseconds (docs/benchmarks.md); up to the Redis and
# Kafka timeouts, which show as the slow end.
_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class ApiMetrics(PolicyMetrics):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        super().__init__(r)
        ProcessCollector(registry=r)
        self.up = Gauge("aml_screener_api_up", "1 while the pre-screen API process runs.", registry=r)
        self.ready = Gauge(
            "aml_screener_api_ready",
            "1 when the pre-screen API can answer (the watchlist answers); 0 while it answers 503.",
            registry=r,
        )
        self.requests = Counter(
            "aml_screener_api_requests_total",
            "Requests answered, by endpoint and outcome (ok, or the error code of the answer).",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.duration = Histogram(
            "aml_screener_api_request_duration_seconds",
            "Time from a request's arrival in the application to its answer, by endpoint.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.screened = Counter(
            "aml_screener_api_screened_total",
            "Addresses (endpoint addresses) and withdrawals (endpoint withdrawal) screened, by verdict and the "
            "policy's action.",
            ["endpoint", "outcome", "action"],
            registry=r,
        )
        self.batch_size = Histogram(
            "aml_screener_api_batch_addresses",
            "Pairs per address-screening request.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.lookup_errors = Counter(
            "aml_screener_api_lookup_errors_total",
            "Watchlist lookups that failed (the request was answered 503), by reason.",
            ["reason"],
            registry=r,
        )
        self.recorded = Counter(
            "aml_screener_api_recorded_total",
            "Withdrawal decisions sent to the decisions topic, by result (acknowledged or failed).",
            ["result"],
            registry=r,
        )
        self.watchlist_info = Info(
            "aml_screener_api_watchlist", "Watchlist version the pre-screen API answers with.", registry=r
        )
        self.keys = Gauge("aml_screener_api_keys", "API keys accepted (in the keys file in force).", registry=r)
        self.key_reloads = Counter(
            "aml_screener_api_key_reloads_total",
            "Changes of the API keys file, by result: reloaded, or refused (invalid; the keys before stay).",
            ["result"],
            registry=r,
        )
        self.up.set(1)
        for endpoint in ENDPOINTS:
            for outcome in OUTCOMES:
                self.requests.labels(endpoint, outcome)  # every series exists from the start (rate() needs it)
        for result in ("reloaded", "refused"):
            self.key_reloads.labels(result)

    def keys_changed(self, result: str, count: int) -> None:
        """KeysWatcher's report: the keys file was read (loaded, reloaded or refused)."""
        if result != "loaded":
            self.key_reloads.labels(result).inc()
        self.keys.set(count)
