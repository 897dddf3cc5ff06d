"""`aml-screener watchlist as-of` on real components: watchlist versions written by the real sync in a real
redis-server, ingested by the real lookback into a real PostgreSQL; then the question "was this address listed at
that time, by which entry, since which version" is answered from the retained version history alone (Redis keeps
only the last versions)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta

import psycopg
import pytest

from aml_screener.history.asof import as_of
from aml_screener.history.store import HistoryStore
from tests.integration.test_history_lookback import World, evm, make_lookback, topics, tron_twin, world  # noqa: F401

pytestmark = pytest.mark.integration


def activated(target: World) -> dict[str, datetime]:
    with contextlib.closing(psycopg.connect(target.dsn, options="-c timezone=UTC")) as conn:
        return {v.version: v.created_at for v in HistoryStore(conn).ingested_versions()}


def ask(target: World, network: str, address: str, at: datetime):
    with contextlib.closing(psycopg.connect(target.dsn, options="-c timezone=UTC")) as conn:
        return as_of(conn, network, address, at)


def test_as_of_names_the_entry_and_version_in_effect_at_each_time(world, topics):  # noqa: F811
    early, late, other = evm(), evm(), evm()
    v1 = world.sync({"ETH": [early, other]})
    lookback = make_lookback(world, topics)
    lookback.process_pending()  # v1 is the baseline: where the retained history starts
    v2 = world.sync({"ETH": [early, other, late]})
    lookback.process_pending()
    v3 = world.sync({"ETH": [late, other]})  # `early` delisted
    lookback.process_pending()
    times = activated(world)
    assert list(times) == [v1, v2, v3]
    before_v1 = times[v1] - timedelta(seconds=1)
    during = {version: at + (times[nxt] - at) / 2 for (version, at), nxt in zip(times.items(), [v2, v3], strict=False)}
    during[v3] = times[v3] + timedelta(days=1)

    assert ask(world, "ethereum", early, before_v1).version is None  # before the retained history: no answer

    answer = ask(world, "ethereum", early, during[v1])
    assert answer.version is not None and answer.version.version == v1 and answer.listed
    [match] = answer.matches
    assert (match["list"], match["listed_address"], match["match_type"]) == ("hacks", early, "direct")
    assert {item.version for item in answer.since.values()} == {v1}
    assert not ask(world, "ethereum", late, during[v1]).listed  # listed only later

    answer = ask(world, "ethereum", late, during[v2])
    assert answer.listed and {item.version for item in answer.since.values()} == {v2}
    assert ask(world, "ethereum", early, during[v2]).listed

    assert not ask(world, "ethereum", early, during[v3]).listed  # delisted by v3
    answer = ask(world, "ethereum", late, during[v3])
    assert answer.version.version == v3 and {item.version for item in answer.since.values()} == {v2}
    # the TRON account of the same key: a related match, as the screener would have made it then
    twin = ask(world, "tron", tron_twin(late), during[v3])
    assert twin.listed and [m["relation"] for m in twin.matches] == ["same_account"]
    assert not ask(world, "tron", tron_twin(late), during[v1]).listed


def test_the_command_prints_json_and_exits_4_when_it_was_listed(world, topics):  # noqa: F811
    listed = evm()
    world.sync({"ETH": [listed]})
    make_lookback(world, topics).process_pending()
    at = (next(iter(activated(world).values())) + timedelta(minutes=1)).isoformat()
    env = {**os.environ, "AML_HISTORY_DATABASE_URL": world.dsn}
    command = [sys.executable, "-m", "aml_screener.cli", "watchlist", "as-of", "--at", at, "ethereum"]
    result = subprocess.run([*command, listed], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 4, result.stderr
    printed = json.loads(result.stdout)
    assert printed["listed"] is True and printed["matches"][0]["listed_address"] == listed
    assert printed["matches"][0]["listed_since_version"] == printed["watchlist_version"]
    clear = subprocess.run([*command, evm()], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert clear.returncode == 0 and json.loads(clear.stdout)["listed"] is False
    bad = subprocess.run([*command[:-3], "--at", "yesterday", "ethereum", listed], env=env, capture_output=True,
                         text=True, timeout=60, check=False)  # fmt: skip
    assert bad.returncode != 0 and "ISO 8601" in bad.stderr
