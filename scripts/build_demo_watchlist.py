"""Rebuild the demo watchlist bundled in services/aml_screener/demo/watchlist/ from OFAC's Advanced XML.

Usage: python scripts/build_demo_watchlist.py \
    ../shared/data/watchlists/ofac_sdn_advanced_xml_2024-09-26/sdn_advanced.xml.bz2

Writes one plain address list per (SDN party, asset) plus manifest.json with the party id, name and programs.
The selection: the North Korea (DPRK) related parties with digital-currency addresses (Lazarus Group and its
launderers, Tornado Cash and Sinbad as listed on that date) and a few others for chain variety. This is a small
sample for the demo; production loads the whole list (see docs/watchlist.md).
"""

from __future__ import annotations

import bz2
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

NS = "{https://sanctionslistservice.ofac.treas.gov/api/PublicationPreview/exports/ADVANCED_XML}"
SELECTED = {
    "27307",  # Lazarus Group (DPRK3)
    "28263",  # Tian Yinyin (CYBER2, DPRK3): laundered Lazarus proceeds
    "28264",  # Li Jiadong (CYBER2, DPRK3)
    "42496",  # Wu Huihui (DPRK3)
    "44718",  # Semenov Roman (CYBER2, DPRK3): Tornado Cash co-founder
    "44437",  # Sinbad (CYBER2, DPRK3): mixer used by Lazarus
    "43377",  # Kim Sang Man (DPRK4)
    "42498",  # Sim Hyon Sop (NPWMD): DPRK bank representative
    "33151",  # SUEX OTC (CYBER2): ransomware proceeds
    "50641",  # Cryptex (CYBER2, RUSSIA-EO14024)
    "36025",  # Garantex Europe (RUSSIA-EO14024)
}
OUT = Path(__file__).resolve().parents[1] / "services" / "aml_screener" / "demo" / "watchlist"


def main(path: str) -> None:
    opener = bz2.open if path.endswith(".bz2") else open
    feature_types: dict[str, str] = {}
    parties: dict[str, dict[str, Any]] = {}
    programs: dict[str, list[str]] = {}
    published = None
    with opener(path, "rb") as handle:
        # A known, checksummed OFAC publication read by a developer script (the product parser uses defusedxml).
        for _event, element in ET.iterparse(handle, events=("end",)):  # noqa: S314
            tag = element.tag[len(NS) :]
            if tag == "DateOfIssue":
                published = "-".join(f"{int(element.findtext(NS + p)):02d}" for p in ("Year", "Month", "Day"))
            elif tag == "FeatureType" and (element.text or "").startswith("Digital Currency Address - "):
                feature_types[element.get("ID", "")] = element.text.split(" - ", 1)[1]
            elif tag == "DistinctParty":
                ref = element.get("FixedRef", "")
                if ref in SELECTED:
                    profile = element.find(NS + "Profile")
                    # The primary alias; its first DocumentedName is the Latin-script one.
                    primary = next(a for a in profile.iter(NS + "Alias") if a.get("Primary") == "true")
                    documented = primary.find(NS + "DocumentedName")
                    name = " ".join(part.text or "" for part in documented.iter(NS + "NamePartValue"))
                    addresses = [
                        (
                            feature_types[f.get("FeatureTypeID")],
                            f.findtext(f"{NS}FeatureVersion/{NS}VersionDetail"),
                        )
                        for f in profile.iter(NS + "Feature")
                        if f.get("FeatureTypeID") in feature_types
                    ]
                    parties[ref] = {"name": name, "addresses": addresses}
                element.clear()
            elif tag == "SanctionsEntry":
                programs[element.get("ProfileID", "")] = [
                    m.findtext(NS + "Comment")
                    for m in element.iter(NS + "SanctionsMeasure")
                    if m.get("SanctionsTypeID") == "1" and m.findtext(NS + "Comment")
                ]
                element.clear()
    for old in OUT.glob("*.txt"):
        old.unlink()
    files = []
    for ref in sorted(parties, key=int):
        party = parties[ref]
        slug = re.sub(r"[^a-z0-9]+", "-", party["name"].lower()).strip("-")[:40]
        by_asset: dict[str, list[str]] = {}
        for asset, address in party["addresses"]:
            by_asset.setdefault(asset, []).append(address)
        for asset, asset_addresses in sorted(by_asset.items()):
            name = f"{ref}-{slug}.{asset}.txt"
            (OUT / name).write_text("".join(f"{a}\n" for a in sorted(asset_addresses)))
            files.append(
                {
                    "file": name,
                    "asset": asset,
                    "entry_id": ref,
                    "entry_name": party["name"],
                    "programs": programs.get(ref, []),
                }
            )
    manifest = {
        "list": "ofac-sdn",
        "category": "sanctions",
        "source": "OFAC SDN Advanced XML (sdn_advanced.xml)",
        "published_at": published,
        "files": files,
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {len(files)} lists for {len(parties)} parties to {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
