"""Plumbing every part of aml-screener shares: settings (AML_* variables), the Kafka and Redis client
configuration, logging. The stream service (screener/), the watchlist side (watchlist/) and the tools import it
from here; it imports none of them."""
