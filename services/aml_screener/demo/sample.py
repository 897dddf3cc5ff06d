"""The bundled OFAC sample (demo/watchlist/, provenance in its README) as a sync source and as listings."""

from __future__ import annotations

from pathlib import Path

from aml_screener.screening.watchlist import Listing
from aml_screener.watchlist.sources.address_list import ManifestSource
from aml_screener.watchlist.sources.base import SourceEntry
from aml_screener.watchlist.store import WatchlistStore
from aml_screener.watchlist.sync import SourceConfig, SyncResult, run_sync

BUNDLED_MANIFEST = Path(__file__).resolve().parent / "watchlist" / "manifest.json"


def sample_config(manifest: Path = BUNDLED_MANIFEST) -> SourceConfig:
    source = ManifestSource(manifest)
    return SourceConfig(
        name=source.name, format="manifest", location=str(manifest), list=source.name, category=source.category
    )


def load_sample(store: WatchlistStore, manifest: Path = BUNDLED_MANIFEST) -> SyncResult:
    """Sync the sample into Redis as source `ofac-sdn` (other sources of the active version are kept)."""
    return run_sync(store, [sample_config(manifest)], keep_other_sources=True)


def sample_listings(manifest: Path = BUNDLED_MANIFEST) -> list[tuple[str, Listing]]:
    """(address key, listing) of every address in the sample (for the synthetic event generator)."""
    return [(item.key, item.listing) for item in ManifestSource(manifest).entries() if isinstance(item, SourceEntry)]
