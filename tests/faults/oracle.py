"""The one accounting oracle every fault scenario is judged by, and the table row it reports.

Given the known input stream (each event's expected outcome comes from the generator, which knows which addresses
are listed) and everything the screeners produced:

- lost: an input event without a decision (or, for an undecodable record, without its dead letter) — must be 0;
- wrong_clear: a listed address decided `CLEAR` even once — must be 0;
- wrong_outcome: any decision other than the expected one (FLAGGED / CLEAR / UNSCREENABLE) — must be 0;
- flagged: the set of event ids on the flagged topics is exactly the set of listed events, each on the topic of its
  direction (withdrawals.flagged or deposits.flagged); the stream mixes withdrawals and deposits;
- duplicates: decisions beyond the first per event (at-least-once); each must carry the same decision id, which is
  how a consumer recognises it. In exactly-once mode the outputs are read as a downstream consumer with
  isolation.level=read_committed reads them, and there must be none: no second decision, flag or dead letter for
  any event.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aml_screener.devstack.generator import Expected, GeneratedEvent
from tests.integration.harness import Outputs

AT_LEAST_ONCE, EXACTLY_ONCE = "at_least_once", "exactly_once"


@dataclass
class Row:
    scenario: str
    broker: str
    guarantee: str
    events_in: int
    decisions_out: int
    dead_letters: int
    lost: int
    duplicates: int
    wrong_clear: int
    wrong_outcome: int
    flagged_mismatch: int
    other_duplicates: int  # flags and dead letters beyond the first per event
    longest_pause_s: float
    notes: str = ""
    problems: list[str] = field(default_factory=list)

    def cells(self) -> list[str]:
        return [
            self.scenario,
            self.broker,
            self.guarantee.replace("_", "-"),
            f"{self.events_in:,}",
            f"{self.decisions_out:,}",
            f"{self.dead_letters:,}",
            str(self.lost),
            f"{self.duplicates:,}",
            str(self.wrong_clear),
            f"{self.longest_pause_s:.1f} s",
            self.notes,
        ]


HEADER = [
    "scenario",
    "broker",
    "guarantee",
    "events in",
    "decisions out",
    "dead letters",
    "lost",
    "duplicates",
    "listed but clear",
    "longest pause",
    "fault",
]


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def longest_pause(decisions: list[dict[str, Any]]) -> float:
    """Longest gap, in seconds, between consecutive decisions (by the time they were decided)."""
    times = sorted(_seconds(decision["timings"]["decided_at"]) for decision in decisions)
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def _seconds(value: Any) -> float:
    """decided_at is a timestamp-micros: a datetime when decoded with logical types, else an int."""
    return value.timestamp() if isinstance(value, datetime) else value / 1e6


def account(
    scenario: str,
    broker: str,
    events: list[GeneratedEvent],
    outputs: Outputs,
    notes: str = "",
    *,
    guarantee: str = AT_LEAST_ONCE,
) -> Row:
    by_event = outputs.decisions_by_event()
    dead_by_key = Counter(record.key.decode() if record.key else "" for record in outputs.dead_letters)
    problems: list[str] = []
    lost = wrong_clear = wrong_outcome = 0
    for event in events:
        if event.expected is Expected.DEAD_LETTER:
            if not dead_by_key.get(event.event_id):
                lost += 1
            continue
        decisions = by_event.get(event.event_id, [])
        if not decisions:
            lost += 1
            continue
        outcomes = {decision["decision"] for decision in decisions}
        if event.expected is Expected.FLAGGED and "CLEAR" in outcomes:
            wrong_clear += 1
        if outcomes != {event.expected.value}:
            wrong_outcome += 1
        if len({decision["decision_id"] for decision in decisions}) != 1:
            problems.append(f"{event.event_id}: duplicates with different decision ids")
    # Each flagged event on its direction's flagged topic (WithdrawalFlagged or DepositFlagged), none elsewhere.
    expected_flagged = {
        (event.direction.value, event.event_id) for event in events if event.expected is Expected.FLAGGED
    }
    flagged = {("withdrawal", record["event_id"]) for record in outputs.flagged} | {
        ("deposit", record["event_id"]) for record in outputs.deposit_flagged
    }
    mismatch = len(expected_flagged ^ flagged)
    duplicates = outputs.duplicates()
    flags = Counter(record["event_id"] for record in outputs.flagged)
    other_duplicates = sum(count - 1 for count in flags.values()) + sum(count - 1 for count in dead_by_key.values())
    return Row(
        scenario=scenario,
        broker=broker,
        guarantee=guarantee,
        events_in=len(events),
        decisions_out=len(outputs.decisions),
        dead_letters=len(outputs.dead_letters),
        lost=lost,
        duplicates=duplicates,
        wrong_clear=wrong_clear,
        wrong_outcome=wrong_outcome,
        flagged_mismatch=mismatch,
        other_duplicates=other_duplicates,
        longest_pause_s=longest_pause(outputs.decisions),
        notes=notes,
        problems=problems,
    )


def assert_sound(row: Row) -> None:
    assert row.lost == 0, f"{row.scenario}: {row.lost} events lost"
    assert row.wrong_clear == 0, f"{row.scenario}: {row.wrong_clear} listed addresses decided CLEAR"
    assert row.wrong_outcome == 0, f"{row.scenario}: {row.wrong_outcome} events with a wrong outcome"
    assert row.flagged_mismatch == 0, f"{row.scenario}: flagged set off by {row.flagged_mismatch} events"
    assert not row.problems, f"{row.scenario}: " + "; ".join(row.problems[:5])
    if row.guarantee == EXACTLY_ONCE:
        assert row.duplicates == 0, f"{row.scenario}: {row.duplicates} duplicate decisions seen read_committed"
        assert row.other_duplicates == 0, f"{row.scenario}: {row.other_duplicates} duplicate flags or dead letters"
