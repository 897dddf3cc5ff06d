"""The bundled OFAC sample (demo/watchlist/, provenance in its README) as a sync source and as listings."""

from __future__ import annotations

from pathlib import Path

from aml_screener.screening.watchlist import Listing
from aml_screener.watchlist.config import ManifestConfig, manifest_config
from aml_screener.watchlist.fetch import open_location
from aml_screener.watchlist.sources.base import SourceEntry
from aml_screener.watchlist.sources.registry import format_of
from aml_screener.watchlist.store import WatchlistStore
from aml_screener.watchlist.sync import SyncResult, run_sync

BUNDLED_MANIFEST = Path(__file__).resolve().parent / "watchlist" / "manifest.json"


def sample_config(manifest: Path = BUNDLED_MANIFEST) -> ManifestConfig:
    """The sample as a `manifest` source named after its list (`ofac-sdn`)."""
    return manifest_config(manifest)


def load_sample(store: WatchlistStore, manifest: Path = BUNDLED_MANIFEST) -> SyncResult:
    """Sync the sample into Redis as source `ofac-sdn` (other sources of the active version are kept)."""
    return run_sync(store, [sample_config(manifest)], keep_other_sources=True)


def sample_listings(manifest: Path = BUNDLED_MANIFEST) -> list[tuple[str, Listing]]:
    """(address key, listing) of every address in the sample (for the synthetic event generator)."""
    config = sample_config(manifest)
    plan = format_of(config).plan(config, open_location)
    return [(item.key, item.listing) for _part, item in plan.read(open_location) if isinstance(item, SourceEntry)]
