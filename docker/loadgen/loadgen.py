"""Demo load for docker/compose.yaml (profile `demo`): synthetic withdrawals at a steady rate until stopped.

`aml-screener demo` is a self-checking run (it loads its own list, starts its own screener and stops); the compose
stack needs only the producing half of it, so this file reuses the project's generator and nothing else:
a share of events goes to addresses of the bundled OFAC sample (the compose sync job loads that sample), some
have invalid addresses or are malformed bytes, so every dashboard panel and alert has something to show.

    python loadgen.py --bootstrap-servers kafka-1:9092,kafka-2:9092,kafka-3:9092 --rate 200
"""

from __future__ import annotations

import argparse
import random
import signal
import time

from confluent_kafka import Producer

from aml_screener.demo.sample import sample_listings
from aml_screener.devstack.generator import EventGenerator
from aml_screener.screener.codec import EventEncoder
from aml_screener.screener.schemas import WITHDRAWAL_REQUESTED, SchemaCatalog

# How often a progress line is printed (the container's log is the only output).
_REPORT_EVERY_SECONDS = 10.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", default="kafka-1:9092,kafka-2:9092,kafka-3:9092")
    parser.add_argument("--topic", default="withdrawals.requested")
    parser.add_argument("--rate", type=float, default=200.0, help="events per second (default 200)")
    parser.add_argument("--hit-share", type=float, default=0.02, help="share to listed addresses (default 0.02)")
    parser.add_argument("--seed", type=int, default=None, help="generator seed (default: random)")
    args = parser.parse_args()
    # `docker compose stop` sends SIGTERM: leave through the same path as Ctrl-C, flushing what is queued.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    current = SchemaCatalog().current(WITHDRAWAL_REQUESTED)
    generator = EventGenerator(
        sample_listings(),
        EventEncoder(current.schema, current.schema_id),
        seed=args.seed if args.seed is not None else random.SystemRandom().randrange(2**32),
        hit_share=args.hit_share,
        clean_pool=10_000,
    )
    producer = Producer({"bootstrap.servers": args.bootstrap_servers, "linger.ms": 5})
    started = time.monotonic()
    next_report = started + _REPORT_EVERY_SECONDS
    sent = 0
    try:
        while True:
            delay = started + sent / args.rate - time.monotonic()
            if delay > 0:
                producer.poll(0)
                time.sleep(delay)
            event = generator.event()
            producer.produce(args.topic, event.value, event.key)
            sent += 1
            if time.monotonic() >= next_report:
                print(f"loadgen: {sent} withdrawals sent to {args.topic}", flush=True)
                next_report += _REPORT_EVERY_SECONDS
    except KeyboardInterrupt:
        pass
    finally:
        producer.flush(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
