"""All screener metrics in one object, created against a registry that tests replace with a fresh one.

Naming follows Prometheus conventions: `aml_screener_` prefix, counters end in `_total`, base units (seconds,
bytes) in names. Label values are bounded: decisions/reasons/stages are closed sets, list and category come from
the operator's watchlist, assets outside a configured set become "other", chains are address families — never an
address, account or event id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector

# Latency buckets from 0.5 ms to 10 s: the screening SLO is tens of milliseconds, outages take seconds.
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05, 0.075,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_STAGE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000, 10000)

# decide includes building and encoding the outputs; produce is sending them and waiting for acknowledgement.
STAGES = ("decode", "normalize", "lookup", "decide", "produce", "commit")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # process_resident_memory_bytes, process_cpu_seconds_total, open fds: the operations dashboard's
        # resource panels and the memory bound of back-pressure.
        ProcessCollector(registry=r)
        self.up = Gauge("aml_screener_up", "1 while the screener process runs.", registry=r)
        self.ready = Gauge(
            "aml_screener_ready",
            "1 when the screener can decide (watchlist loaded, Redis reachable).",
            registry=r,
        )
        self.unreadable_partitions = Gauge(
            "aml_screener_input_unreadable_partitions",
            "Input partitions blocked at a record batch the Kafka client cannot read (unsupported codec, corrupt "
            "batch); their records wait undecided.",
            registry=r,
        )
        self.fail_closed = Gauge(
            "aml_screener_fail_closed",
            "1 while consumption is paused because the watchlist cannot be consulted (no decisions are made).",
            registry=r,
        )
        self.failure_mode = Info(
            "aml_screener_failure_mode",
            "What the screener does while the watchlist cannot be consulted: 'closed' (pause, the default) or "
            "'open' (route events unscreened to the hold topic; never 'clear').",
            registry=r,
        )
        self.fail_open_active = Gauge(
            "aml_screener_fail_open_active",
            "1 while fail-open mode is bypassing screening (events go to the hold topic, unscreened).",
            registry=r,
        )
        self.held = Counter(
            "aml_screener_held_total",
            "Events passed unscreened to the hold topic in fail-open mode, by why the watchlist was unavailable.",
            ["reason"],
            registry=r,
        )
        self.fail_closed_pauses = Counter(
            "aml_screener_fail_closed_pauses_total",
            "Times the screener paused consumption because the watchlist could not be consulted.",
            ["reason"],
            registry=r,
        )
        self.fail_closed_seconds = Counter(
            "aml_screener_fail_closed_seconds_total", "Time spent paused in fail-closed state.", registry=r
        )
        self.events_consumed = Counter(
            "aml_screener_events_consumed_total", "Input records consumed.", ["topic"], registry=r
        )
        self.decisions = Counter(
            "aml_screener_decisions_total",
            "Decisions produced and acknowledged by Kafka, by outcome and direction (withdrawal, deposit).",
            ["decision", "direction"],
            registry=r,
        )
        self.actions = Counter(
            "aml_screener_actions_total",
            "Actions the policy chose for acknowledged decisions, by direction (withdrawal: reject/hold/allow; "
            "deposit: freeze/review/accept).",
            ["direction", "action"],
            registry=r,
        )
        self.flags = Counter(
            "aml_screener_flags_total",
            "Watchlist matches of flagged events (one per matched list entry), by direction.",
            ["list", "category", "asset", "chain", "direction"],
            registry=r,
        )
        self.flagged_usd = Counter(
            "aml_screener_flagged_usd_total",
            "USD value of flagged events (where the event carries usd_value), by direction.",
            ["category", "asset", "direction"],
            registry=r,
        )
        self.unscreenable = Counter(
            "aml_screener_unscreenable_total",
            "Events decided UNSCREENABLE, by reason (invalid address, unsupported network).",
            ["reason"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "aml_screener_dead_lettered_total",
            "Input records sent to a dead-letter topic, by reason and direction (which input they came from).",
            ["reason", "direction"],
            registry=r,
        )
        self.batch_size = Histogram(
            "aml_screener_batch_size_records",
            "Records per screened batch.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.end_to_end_latency = Histogram(
            "aml_screener_end_to_end_latency_seconds",
            "From the input record's Kafka timestamp to its decision being acknowledged by Kafka.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_duration = Histogram(
            "aml_screener_stage_duration_seconds",
            "Wall time of one pipeline stage for one batch.",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.redis_lookup_duration = Histogram(
            "aml_screener_redis_lookup_duration_seconds",
            "Wall time of the watchlist lookup round trip(s) for one batch.",
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.lookup_errors = Counter(
            "aml_screener_lookup_errors_total", "Failed watchlist lookups, by reason.", ["reason"], registry=r
        )
        self.produce_errors = Counter(
            "aml_screener_produce_errors_total",
            "Output records Kafka did not acknowledge (they are re-sent; offsets are not committed past them).",
            ["topic"],
            registry=r,
        )
        self.loop_errors = Counter(
            "aml_screener_loop_errors_total",
            "Errors the consumer loop recovered from (the batch is re-read), by where they happened.",
            ["where"],
            registry=r,
        )
        self.commits = Counter("aml_screener_offset_commits_total", "Offset commits.", ["result"], registry=r)
        self.rebalances = Counter(
            "aml_screener_rebalances_total", "Partition assignment changes.", ["kind"], registry=r
        )
        self.assigned_partitions = Gauge(
            "aml_screener_assigned_partitions",
            "Input partitions currently assigned to this member.",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "aml_screener_consumer_lag_records",
            "High watermark minus consumed position, per assigned input partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.watchlist_info = Info("aml_screener_watchlist", "Watchlist version the screener decides with.", registry=r)
        self.watchlist_keys = Gauge(
            "aml_screener_watchlist_addresses", "Address keys in the watchlist version in use.", registry=r
        )
        self.watchlist_switches = Counter(
            "aml_screener_watchlist_version_switches_total",
            "Times the screener started using a new watchlist version.",
            registry=r,
        )
        self.watchlist_created = Gauge(
            "aml_screener_watchlist_created_timestamp_seconds",
            "Unix time the watchlist version in use was built by the sync job.",
            registry=r,
        )
        self.watchlist_notifications = Counter(
            "aml_screener_watchlist_notifications_total",
            "Change notifications received from the sync job (new versions).",
            registry=r,
        )
        self.source_published = Gauge(
            "aml_screener_watchlist_source_published_timestamp_seconds",
            "Publication time the source states for its data (e.g. OFAC's date of issue), per source.",
            ["source"],
            registry=r,
        )
        self.source_last_success = Gauge(
            "aml_screener_watchlist_source_last_success_timestamp_seconds",
            "Unix time of the last successful sync of the source (fetched and parsed, or unchanged).",
            ["source"],
            registry=r,
        )
        self.source_failing = Gauge(
            "aml_screener_watchlist_source_failing",
            "1 when the last sync attempt of the source failed (its previous data is still in use), else 0.",
            ["source"],
            registry=r,
        )
        self.source_addresses = Gauge(
            "aml_screener_watchlist_source_addresses",
            "Address keys of the source in the watchlist version in use.",
            ["source"],
            registry=r,
        )
        self.last_batch_timestamp = Gauge(
            "aml_screener_last_batch_timestamp_seconds",
            "Unix time the last batch was committed (progress indicator).",
            registry=r,
        )
        self.policy_info = Info(
            "aml_screener_policy",
            "Version of the action policy the screener decides with (declared version + content digest).",
            registry=r,
        )
        self.policy_reloads = Counter(
            "aml_screener_policy_reloads_total",
            "Changes of the policy file seen while running, by result: applied (a new policy is in use), unchanged "
            "(same rules, e.g. only comments changed), invalid or unreadable (refused: the previous policy stays).",
            ["result"],
            registry=r,
        )
        self.policy_file_refused = Gauge(
            "aml_screener_policy_file_refused",
            "1 while the policy file's current content is refused (invalid or unreadable): the screener decides "
            "with an earlier policy than the file says.",
            registry=r,
        )
