"""Where the shared real-watchlist data set lives (outside the repository; see ../shared/data/watchlists/README.md).

Looked up in order: $AML_TEST_WATCHLIST_DATA, the repository's sibling `../shared/data/watchlists` (a normal
checkout next to the data), and `/work/shared/data/watchlists` (where CI machines of this project keep it, also
for checkouts elsewhere, e.g. a fresh clone in /tmp). Tests that need it skip with that explanation if absent.
"""

from __future__ import annotations

import os
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]


def watchlist_data_dir() -> Path:
    candidates = [
        Path(os.environ["AML_TEST_WATCHLIST_DATA"]) if os.environ.get("AML_TEST_WATCHLIST_DATA") else None,
        _REPO.parent / "shared" / "data" / "watchlists",
        Path("/work/shared/data/watchlists"),
    ]
    for candidate in candidates:
        if candidate is not None and candidate.is_dir():
            return candidate
    return _REPO.parent / "shared" / "data" / "watchlists"
