"""Graceful lifecycle: SIGTERM under load drains within the configured bound, commits what was finished, and leaves
the group (LeaveGroup) so the remaining member takes the partitions over without waiting for the session timeout.

On real Kafka the group coordinator rebalances as soon as a LeaveGroup arrives, and logs it: that log line on the
broker is the proof. The session timeout is set to 30 s here, so a member that vanished silently would hold its
partitions for 30 s; the hand-over measured is reported and must beat that (it takes a heartbeat interval, 3 s,
plus the rebalance)."""

from __future__ import annotations

import threading
import time

import pytest

from tests.integration.harness import INPUT_PARTITIONS, all_decided, generate, load_bundled_watchlist, produce

pytestmark = pytest.mark.integration

SESSION_TIMEOUT_S = 30  # what a silent departure would cost before the partitions move
SHUTDOWN_BOUND_S = 5


def test_sigterm_under_load_drains_within_the_bound_and_hands_partitions_over_at_once(stack, screeners, reader):
    listings = load_bundled_watchlist(stack.redis_url)
    events = generate(listings, 12_000, seed=21, hit_share=0.05)
    env = {
        "AML_SHUTDOWN_TIMEOUT_SECONDS": str(SHUTDOWN_BOUND_S),
        "AML_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_S * 1000),
    }
    leaving_client = f"leaving-{stack.topics.input}"  # the coordinator names members by client id
    leaving = screeners("leaving", AML_KAFKA_CLIENT_ID=leaving_client, **env)
    leaving.wait_assigned()
    staying = screeners("staying", **env)

    def split() -> bool:
        mine = staying.probe("/readyz")[1]["assigned_partitions"]
        return bool(mine) and len(mine) < INPUT_PARTITIONS

    staying.wait_until(split, 60, "both members to share the partitions")

    def load() -> None:
        for start in range(0, len(events), 300):
            produce(stack, events[start : start + 300])
            time.sleep(0.1)

    producer = threading.Thread(target=load, daemon=True)
    producer.start()
    reader.read_until(lambda o: len(o.decisions) >= 2_000, 60, "the load flowing")
    assert leaving.proc is not None
    signalled = time.monotonic()
    leaving.proc.terminate()  # SIGTERM
    code = leaving.proc.wait(SHUTDOWN_BOUND_S + 10)
    drained_in = time.monotonic() - signalled
    staying.wait_until(
        lambda: len(staying.probe("/readyz")[1]["assigned_partitions"]) == INPUT_PARTITIONS,
        SESSION_TIMEOUT_S,
        "the staying member to own every partition before a silent departure's session timeout",
    )
    handed_over_in = time.monotonic() - signalled
    assert code == 0
    # The deterministic proof of a clean exit: the group coordinator logged the member's explicit LeaveGroup.
    left = stack.cluster.logged(f"Member {leaving_client}-", "has left group through explicit `LeaveGroup` request")
    assert left, "the group was left with a LeaveGroup request"
    assert drained_in < SHUTDOWN_BOUND_S + 2, f"drained in {drained_in:.1f} s (bound {SHUTDOWN_BOUND_S} s)"
    messages = [line["msg"] for line in leaving.log_lines()]
    assert "stop requested" in messages and "screener stopped" in messages
    producer.join(60)
    outputs = reader.read_until(all_decided(events), 90, "every event decided")
    outputs = reader.settle(1.0)
    # The leaving member committed everything it finished: at most its last in-flight window is decided twice.
    assert outputs.duplicates() <= 4 * 2000
    print(f"SIGTERM drain {drained_in:.2f} s, partitions handed over after {handed_over_in:.2f} s")
    assert staying.terminate() == 0
