"""Least-privilege Redis ACL users for the watchlist, for a key prefix: the one place their rules are defined.

- the **screener** (`aml-screener run`) reads: exactly the commands of `screener/lookup.py` and
  `screener/watchlist_watch.py`, read-only on the watchlist keys (`%R~`), and SUBSCRIBE on the change channel;
  the history's lookback (`aml-screener history lookback`) logs in as this reader too (it adds HSCAN and ZRANGE,
  read-only commands: it reads whole tables and the versions index);
- the **sync** job (`aml-screener watchlist sync|load|status|check`) writes: the commands of `watchlist/store.py`
  and `watchlist/sync.py` on the watchlist keys only, and PUBLISH on the change channel.

Neither user gets any other key, channel, administrative or dangerous command (FLUSHALL, CONFIG, KEYS, DEBUG,
ACL, ...). AUTH needs no permission; redis-py sends nothing else when it connects (RESP2, db 0; SELECT for
another db is allowed). On Redis >= 7.2 redis-py also sends CLIENT SETINFO (its library name) and ignores a
refusal; `client_setinfo=True` allows it (the subcommand does not exist before 7.2, where the rule is an error).
`tests/integration/test_security.py` runs a real sync and a real screener under these rules over TLS, so a new
command in either path that is missing here fails there with NOPERM.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from aml_screener.infra.watchlist_layout import WatchlistKeys
from aml_screener.watchlist.errors import AclError

DEFAULT_SCREENER_USER = "aml-screener"
DEFAULT_SYNC_USER = "aml-sync"

# Every command the screener sends (lookup: GET, HGETALL, MULTI/EXEC with GET, HLEN, HMGET; the watcher:
# SUBSCRIBE, GET, HGETALL, PING as health check) plus what a connection may need (SELECT for a db other than 0,
# DISCARD/UNSUBSCRIBE when a transaction or subscription is abandoned), and the lookback's reads (history/lookback.py:
# HSCAN of a version's tables, ZRANGE of the versions index).
SCREENER_COMMANDS: tuple[str, ...] = (
    "ping",
    "select",
    "get",
    "hgetall",
    "hlen",
    "hmget",
    "hscan",
    "zrange",
    "multi",
    "exec",
    "discard",
    "subscribe",
    "unsubscribe",
)

# Every command the sync job sends: table writes (HMGET, HSET, HLEN, RENAME, DEL), versions (HSET, SET, ZADD,
# ZRANGE, ZREM in MULTI/EXEC), garbage collection (SCAN, DEL), source states (HGETALL, HSET), the writer lock
# (SET NX PX, released by an EVAL of GET + DEL), diffs (HSCAN, HLEN), the change notification (PUBLISH), and the
# reads of `watchlist status|check` (GET, HGET, HGETALL, EXISTS).
SYNC_COMMANDS: tuple[str, ...] = (
    "ping",
    "select",
    "get",
    "set",
    "exists",
    "del",
    "rename",
    "hget",
    "hgetall",
    "hlen",
    "hmget",
    "hset",
    "hscan",
    "scan",
    "zadd",
    "zrange",
    "zrem",
    "eval",
    "multi",
    "exec",
    "discard",
    "publish",
)

# A placeholder Redis refuses (a password hash must be 64 lowercase hex digits): an ACL applied without
# replacing it fails instead of creating a user with a known or empty password.
PASSWORD_PLACEHOLDER = "#<sha256-hex-of-the-password>"  # noqa: S105 - a placeholder, not a password


def _glob_escape(text: str) -> str:
    """Escape Redis glob characters so a prefix is matched literally (`{wl}` needs no escaping)."""
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)


def _check_token(what: str, value: str) -> None:
    if not value or any(char.isspace() or char in "\"'" for char in value):
        raise AclError(f"{what} {value!r} cannot be used in an ACL rule (empty, whitespace or quotes)")


def password_rule(password: str | None) -> str:
    """`#<sha256>` for a password (Redis stores only the hash; the clear text never appears in the rule)."""
    if password is None:
        return PASSWORD_PLACEHOLDER
    if not password:
        raise AclError("empty password")
    return "#" + hashlib.sha256(password.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AclUser:
    name: str
    rules: tuple[str, ...]  # ACL SETUSER arguments after the name

    def setuser_args(self) -> list[str]:
        return ["ACL", "SETUSER", self.name, *self.rules]

    def command_line(self) -> str:
        """For `redis-cli` (interactive or piped): `ACL SETUSER name rule ...`."""
        return " ".join(self.setuser_args())

    def aclfile_line(self) -> str:
        """For an ACL file (`aclfile` directive, or a chart's users.acl): `user name rule ...`."""
        return " ".join(["user", self.name, *(rule for rule in self.rules if rule != "reset")])


def screener_user(
    prefix: str, password: str | None, name: str = DEFAULT_SCREENER_USER, *, client_setinfo: bool = False
) -> AclUser:
    keys = WatchlistKeys(prefix)
    _check_token("user name", name)
    _check_token("key prefix", prefix)
    commands = [*SCREENER_COMMANDS, *(("client|setinfo",) if client_setinfo else ())]
    rules = (
        "reset",
        "on",
        password_rule(password),
        f"%R~{_glob_escape(prefix)}:*",
        "resetchannels",
        f"&{_glob_escape(keys.changes)}",
        "-@all",
        *(f"+{command}" for command in commands),
    )
    return AclUser(name, rules)


def sync_user(
    prefix: str, password: str | None, name: str = DEFAULT_SYNC_USER, *, client_setinfo: bool = False
) -> AclUser:
    keys = WatchlistKeys(prefix)
    _check_token("user name", name)
    _check_token("key prefix", prefix)
    commands = [*SYNC_COMMANDS, *(("client|setinfo",) if client_setinfo else ())]
    rules = (
        "reset",
        "on",
        password_rule(password),
        f"~{_glob_escape(prefix)}:*",
        "resetchannels",
        f"&{_glob_escape(keys.changes)}",
        "-@all",
        *(f"+{command}" for command in commands),
    )
    return AclUser(name, rules)


def watchlist_users(
    prefix: str,
    *,
    screener_password: str | None = None,
    sync_password: str | None = None,
    screener_name: str = DEFAULT_SCREENER_USER,
    sync_name: str = DEFAULT_SYNC_USER,
    client_setinfo: bool = False,
) -> Sequence[AclUser]:
    """The two users, screener first."""
    return (
        screener_user(prefix, screener_password, screener_name, client_setinfo=client_setinfo),
        sync_user(prefix, sync_password, sync_name, client_setinfo=client_setinfo),
    )
