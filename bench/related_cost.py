"""`make bench` part D: what related-address matching (screening/related.py) costs, measured side by side.

Every measurement alternates rounds with relations on and off in one run (off = the relation functions replaced by
ones that return nothing, in that process only: a benchmark switch, not a product setting) and reports medians and
the on/off ratio:

- pipeline CPU per event (in process, no Kafka or Redis: decode, normalize + related keys, decide, encode; a lookup
  that finds nothing), once with a cold normalization cache and once warm: where the extra time goes;
- the screener end to end (the real wiring, mock broker, real Redis with the bundled OFAC sample), 100,000 events;
- a list sync of synthetic Bitcoin P2PKH addresses (each listing also stored under its P2SH-P2WPKH key): time,
  keys and Redis memory.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from aml_screener.demo.sample import sample_listings
from aml_screener.devstack.generator import EventGenerator
from aml_screener.screener import pipeline
from aml_screener.screener.codec import EventEncoder, RecordEncoder, WithdrawalDecoder
from aml_screener.screener.lookup import LookupResult
from aml_screener.screener.pipeline import BatchScreener, Normalizer, Topics
from aml_screener.screener.schemas import (
    SCREENING_DECISION,
    WITHDRAWAL_FLAGGED,
    WITHDRAWAL_REQUESTED,
    LocalSchemaRepository,
    SchemaCatalog,
)
from aml_screener.screening import related

AML_BENCH_RELATIONS = "AML_BENCH_RELATIONS"  # "off" in a worker's environment disables relations there
_ORIGINAL: dict[tuple[Any, str], Callable[..., Any]] = {
    (pipeline, "related_to"): pipeline.related_to,  # type: ignore[attr-defined]
    (pipeline, "screening_keys"): pipeline.screening_keys,  # type: ignore[attr-defined]
    (related, "listing_keys"): related.listing_keys,
}


def set_relations(enabled: bool) -> None:
    """Relations on (the product) or off (every relation function returns nothing), in this process."""
    for (module, name), function in _ORIGINAL.items():
        setattr(module, name, function if enabled else (lambda *args: ()))


def disable_relations_if_asked() -> bool:
    """Called by bench workers at start: with AML_BENCH_RELATIONS=off, no related keys anywhere in this process."""
    if os.environ.get(AML_BENCH_RELATIONS) != "off":
        return False
    set_relations(False)
    return True


def pipeline_cpu(events: int, rounds: int, seed: int) -> dict[str, Any]:
    """CPU seconds per event of prepare + complete over generated withdrawals, relations on vs off."""
    catalog = SchemaCatalog()
    entry = catalog.current(WITHDRAWAL_REQUESTED)
    generator = EventGenerator(
        sample_listings(), EventEncoder(entry.schema, entry.schema_id), seed=seed, clean_pool=events // 2
    )
    records = [_Record(offset, event.value) for offset, event in enumerate(generator.stream(events))]
    decision, flagged = catalog.current(SCREENING_DECISION), catalog.current(WITHDRAWAL_FLAGGED)

    def lookup(keys: Sequence[str]) -> LookupResult:
        return LookupResult("bench", 1_000, {}, 0.0)

    def one_round(enabled: bool) -> tuple[float, float]:
        set_relations(enabled)
        screener = BatchScreener(
            decoder=WithdrawalDecoder(LocalSchemaRepository(catalog), catalog, max_message_bytes=65_536),
            decision_encoder=RecordEncoder(decision.schema, decision.schema_id),
            flagged_encoder=RecordEncoder(flagged.schema, flagged.schema_id),
            topics=Topics("d", "f", "dlq"),
            instance_id="bench",
            lookup=lookup,
            normalizer=Normalizer(),
        )
        passes = []
        for _ in range(2):  # first pass: cold normalization cache; second: warm
            started = time.process_time()
            for start in range(0, len(records), 500):
                screener.complete(screener.prepare(records[start : start + 500]))
            passes.append((time.process_time() - started) / len(records) * 1e6)
        return passes[0], passes[1]

    results: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
    try:
        for _ in range(rounds):
            for mode in ("off", "on"):
                results[mode].append(one_round(mode == "on"))
    finally:
        set_relations(True)
    out: dict[str, Any] = {"events": events, "rounds": rounds, "distinct_clean_destinations": events // 2}
    for index, cache in enumerate(("cold", "warm")):
        on = statistics.median(r[index] for r in results["on"])
        off = statistics.median(r[index] for r in results["off"])
        out[cache] = {"us_per_event_on": on, "us_per_event_off": off, "extra_us": on - off, "ratio_on_off": off / on}
    return out


class _Record:
    __slots__ = ("key", "offset", "value")
    topic = "in"
    partition = 0
    timestamp = 1
    headers: list[tuple[str, bytes]] | None = None

    def __init__(self, offset: int, value: bytes) -> None:
        self.offset = offset
        self.key = b"k"
        self.value = value


def summary_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    cpu = report.get("pipeline_cpu")
    if cpu:
        for cache in ("cold", "warm"):
            c = cpu[cache]
            lines.append(
                f"| pipeline CPU per event, {cache} cache: relations on / off | {c['us_per_event_on']:.1f} / "
                f"{c['us_per_event_off']:.1f} us (+{c['extra_us']:.1f} us, throughput x{c['ratio_on_off']:.2f}) |"
            )
    screener = report.get("screener")
    if screener:
        lines.append(
            f"| screener end to end: relations on / off (median of {len(screener['on'])}) | "
            f"{statistics.median(screener['on']):,.0f} / {statistics.median(screener['off']):,.0f} events/s "
            f"(x{screener['ratio_on_off']:.2f}) |"
        )
    sync = report.get("sync")
    if sync:
        on, off = sync["on"], sync["off"]
        lines.append(
            f"| {sync['addresses']:,} Bitcoin P2PKH addresses sync: relations on / off | {on['seconds']:.1f} / "
            f"{off['seconds']:.1f} s, {on['keys']:,} / {off['keys']:,} keys, {on['redis_used_memory_mb']:.0f} / "
            f"{off['redis_used_memory_mb']:.0f} MB Redis |"
        )
    ofac = report.get("ofac_xml_sync_seconds")
    if ofac:
        on, off = statistics.median(ofac["on"]), statistics.median(ofac["off"])
        lines.append(
            f"| OFAC Advanced XML sync: relations on / off (median of {len(ofac['on'])}) | {on:.1f} / {off:.1f} s |"
        )
    return lines
