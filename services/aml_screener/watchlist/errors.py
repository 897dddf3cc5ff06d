"""The exceptions of the watchlist write side: one root, split by where the error happens.

Every error the package raises on purpose is a `WatchlistError`. The sync (and `watchlist load`/`parse`) treats
exactly these, and `OSError` (a missing file, an unreachable URL: `URLError` is an `OSError`) and `EOFError` (a
compressed file that ends early), as a failure of the one source being read: it is reported and that source keeps
its previous table. Anything else is a bug and is not caught: it ends the command with its traceback.

    WatchlistError
    ├── SyncConfigError      the sync configuration (sources.toml, `load` options) is invalid: names source, field
    ├── SourceFormatError    a file is not in its format at all (a whole file refused, not one address)
    ├── FetchError           a list could not be downloaded (a broken HTTP response)
    ├── IntegrityError       new data refused: checksum mismatch, a shrink beyond max_shrink
    ├── WatchlistWriteError  a table or version could not be built or activated
    │   └── EmptyTableError  a source produced no usable entry
    ├── SyncFailed           nothing was activated (no source has data, or a damaged table cannot be rebuilt)
    ├── AclError             an ACL user name, key prefix or password cannot be used in an ACL rule
    └── UsageError           a command was asked for something impossible
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aml_screener.watchlist.sync import SourceResult


class WatchlistError(Exception):
    """Root of every error the watchlist write side raises on purpose."""


class SyncConfigError(WatchlistError):
    """The sync configuration is invalid; the message names the source, the field and the expected form."""


class SourceFormatError(WatchlistError):
    """The input is not the expected file format at all (as opposed to one unusable address, a `Rejection`).

    Raised by the parsers for: undecodable or malformed structure, a row or document that does not have the
    expected shape, an empty or cut-off file, and (XML) hostile constructs such as entity declarations. The message
    says where.
    """


class FetchError(WatchlistError):
    """A list could not be fetched for a reason that is not an `OSError` (e.g. an HTTP body cut short)."""


class IntegrityError(WatchlistError):
    """A source's new data is inconsistent (checksum, shrink): it is refused and its previous table is kept."""


class WatchlistWriteError(WatchlistError):
    """A table or version could not be built or activated; the active version is unchanged."""


class EmptyTableError(WatchlistWriteError):
    """A source produced no usable entry: never activated (it would silently drop the whole list)."""


class SyncFailed(WatchlistError):
    """No source produced data and no previous version exists, or a damaged table could not be rebuilt: nothing
    was activated."""

    def __init__(self, message: str, results: Sequence[SourceResult] | None = None) -> None:
        errors = "; ".join(f"{r.name}: {r.error}" for r in results or [] if r.error)
        super().__init__(f"{message} ({errors})" if errors else message)
        self.results = list(results or [])


class AclError(WatchlistError):
    """An ACL user name, key prefix or password cannot be used in an ACL rule; the message says which."""


class UsageError(WatchlistError):
    """The command line asks for something impossible; the message says what to change."""


# What reading one source can raise without a bug: the package's own errors, I/O and network errors (URLError and
# HTTPError are OSErrors), and EOFError from a .bz2/.gz that ends early.
SOURCE_ERRORS: tuple[type[Exception], ...] = (WatchlistError, OSError, EOFError)

__all__ = [
    "SOURCE_ERRORS",
    "AclError",
    "EmptyTableError",
    "FetchError",
    "IntegrityError",
    "SourceFormatError",
    "SyncConfigError",
    "SyncFailed",
    "UsageError",
    "WatchlistError",
    "WatchlistWriteError",
]
