"""Graceful lifecycle: SIGTERM under load drains within the configured bound, commits what was finished, and leaves
the group (LeaveGroup) so the remaining member takes the partitions over without waiting for the session timeout.

On the embedded mock broker every rebalance is held for session.timeout - 1 s (see devstack/stack.py), so a member
that vanished silently costs at least session timeout (expiry) + that hold = 11 s at the 6 s used here; after a
LeaveGroup only the hold remains (one or two of them: 5 s or 10 s measured). Real Kafka answers the rejoin at
once. The timing is therefore reported, and the LeaveGroup request seen by the broker is the proof."""

from __future__ import annotations

import threading
import time

import pytest

from aml_screener.devstack.mock_kafka import ApiKey
from tests.integration.harness import TOPICS, all_decided, generate, load_bundled_watchlist, produce

pytestmark = pytest.mark.integration

SESSION_TIMEOUT_S = 6  # the embedded broker's test setting (MOCK_SCREENER_ENV)
SILENT_DEPARTURE_S = 2 * SESSION_TIMEOUT_S - 1  # expiry + the mock's rebalance hold: the least a crash costs
SHUTDOWN_BOUND_S = 5


def test_sigterm_under_load_drains_within_the_bound_and_hands_partitions_over_at_once(stack, screeners, reader):
    listings = load_bundled_watchlist(stack.redis_url)
    events = generate(listings, 12_000, seed=21, hit_share=0.05)
    env = {"AML_SHUTDOWN_TIMEOUT_SECONDS": str(SHUTDOWN_BOUND_S)}
    leaving = screeners("leaving", **env)
    leaving.wait_assigned()
    staying = screeners("staying", **env)

    def split() -> bool:
        mine = staying.probe("/readyz")[1]["assigned_partitions"]
        return bool(mine) and len(mine) < TOPICS["withdrawals.requested"]

    staying.wait_until(split, 60, "both members to share the partitions")

    def load() -> None:
        for start in range(0, len(events), 300):
            produce(stack.bootstrap_servers, events[start : start + 300])
            time.sleep(0.1)

    producer = threading.Thread(target=load, daemon=True)
    producer.start()
    reader.read_until(lambda o: len(o.decisions) >= 2_000, 60, "the load flowing")
    assert leaving.proc is not None
    stack.kafka.start_request_tracking()
    signalled = time.monotonic()
    leaving.proc.terminate()  # SIGTERM
    code = leaving.proc.wait(SHUTDOWN_BOUND_S + 10)
    drained_in = time.monotonic() - signalled
    staying.wait_until(
        lambda: len(staying.probe("/readyz")[1]["assigned_partitions"]) == TOPICS["withdrawals.requested"],
        60,
        "the staying member to own every partition",
    )
    handed_over_in = time.monotonic() - signalled
    left = [request for request in stack.kafka.requests() if request.api_key == ApiKey.LEAVE_GROUP]
    stack.kafka.stop_request_tracking()
    assert code == 0
    # The deterministic proof of a clean exit: the broker received the LeaveGroup (real Kafka rebalances at once).
    assert left, "the group was left with a LeaveGroup request"
    assert drained_in < SHUTDOWN_BOUND_S + 2, f"drained in {drained_in:.1f} s (bound {SHUTDOWN_BOUND_S} s)"
    # On the mock the hand-over takes one or two of its rebalance holds (5 s or 10 s measured); a silent departure
    # could not finish before the session expiry plus one hold (11 s). A sanity bound, not the proof:
    assert handed_over_in < SILENT_DEPARTURE_S + SESSION_TIMEOUT_S, f"partitions moved after {handed_over_in:.1f} s"
    messages = [line["msg"] for line in leaving.log_lines()]
    assert "stop requested" in messages and "screener stopped" in messages
    producer.join(60)
    outputs = reader.read_until(all_decided(events), 90, "every event decided")
    outputs = reader.settle(1.0)
    # The leaving member committed everything it finished: at most its last in-flight window is decided twice.
    assert outputs.duplicates() <= 4 * 2000
    print(f"SIGTERM drain {drained_in:.2f} s, partitions handed over after {handed_over_in:.2f} s")
    assert staying.terminate() == 0
