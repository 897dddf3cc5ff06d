"""The ACL rules of `aml-screener watchlist acl`: scoped to the configured prefix, passwords only as hashes, the
screener's user without a single write command. (tests/integration/test_security.py applies them to a real
redis-server and runs the sync job and a screener under them.)"""

from __future__ import annotations

import hashlib

import pytest

from aml_screener.cli import main
from aml_screener.watchlist.acl import PASSWORD_PLACEHOLDER, screener_user, sync_user, watchlist_users
from aml_screener.watchlist.errors import AclError

# Commands that change data or server state; none may be granted to the screener.
_WRITES = {"set", "del", "unlink", "hset", "hdel", "hsetnx", "rename", "zadd", "zrem", "publish", "eval", "expire"}


def test_screener_user_is_read_only_on_the_prefix_and_may_only_subscribe():
    user = screener_user("aml:{wl}", "pw-1")
    granted = {rule[1:] for rule in user.rules if rule.startswith("+")}
    assert not granted & _WRITES
    assert "-@all" in user.rules and user.rules.index("-@all") < min(user.rules.index(f"+{c}") for c in granted)
    assert "%R~aml:{wl}:*" in user.rules, "read-only key permission, in addition to read-only commands"
    assert "&aml:{wl}:changes" in user.rules and "resetchannels" in user.rules


def test_sync_user_writes_only_under_the_prefix_and_publishes_only_the_change_channel():
    user = sync_user("aml:{wl}", "pw-2")
    assert "~aml:{wl}:*" in user.rules and not any(rule in ("~*", "allkeys", "+@all") for rule in user.rules)
    assert "&aml:{wl}:changes" in user.rules and "allchannels" not in user.rules
    assert {"+hset", "+rename", "+publish", "+eval"} <= set(user.rules)
    assert not {"+flushall", "+flushdb", "+config", "+keys", "+acl", "+debug"} & set(user.rules)


def test_prefix_glob_characters_are_matched_literally():
    user = screener_user("tenant*[1]", "pw")
    assert r"%R~tenant\*\[1\]:*" in user.rules
    with pytest.raises(AclError, match="prefix"):
        screener_user("aml wl", "pw")


def test_passwords_appear_only_as_sha256_and_a_missing_one_as_a_placeholder_redis_refuses():
    screener, sync = watchlist_users("aml:{wl}", screener_password="s3cret-a", sync_password=None)
    line = screener.command_line()
    assert "s3cret-a" not in line
    assert "#" + hashlib.sha256(b"s3cret-a").hexdigest() in screener.rules
    assert PASSWORD_PLACEHOLDER in sync.rules


def test_cli_prints_commands_for_the_configured_prefix(monkeypatch, capsys):
    monkeypatch.setenv("AML_WATCHLIST_KEY_PREFIX", "exch1:{wl}")
    monkeypatch.setenv("SCREENER_PW", "s3cret-b")
    assert main(["watchlist", "acl", "--screener-password-env", "SCREENER_PW", "--aclfile"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [["user", "aml-screener"], ["user", "aml-sync"]]
    assert all("~exch1:{wl}:*" in line for line in lines)
    assert "s3cret-b" not in "".join(lines)
    monkeypatch.delenv("SCREENER_PW")
    assert main(["watchlist", "acl", "--screener-password-env", "SCREENER_PW"]) == 2
