"""The docs name files that exist: every path the README, docs/ and schemas/README.md cite (in backticks or as a
link) is in the repository, so a rename or a removal cannot leave the docs pointing at nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "services" / "aml_screener"
DOCS = [ROOT / "README.md", ROOT / "schemas" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A cited file: a path with a known extension (code, docs, config), in backticks or as a markdown link target.
_SUFFIXES = r"(?:py|md|avsc|json|toml|yaml|yml|sh|txt|tsv|csv|cfg|ini)"
_CITED = re.compile(rf"`([\w./{{}}*-]+\.{_SUFFIXES})`|\]\(([\w./-]+\.{_SUFFIXES})(?:#[\w-]*)?\)")
# Names that are examples of what users write or download (OFAC's and OpenSanctions' own files), not files of
# this repository.
_EXAMPLES = {
    "sources.toml",
    "stolen-funds.txt",
    "name.ETH.txt",
    "entities.ftm.json",
    "targets.nested.json",
    "sdn_advanced_checksum.txt",
    "my-values.yaml",
    "entries.jsonl",
    "stolen.txt",
    "blocklist.csv",
    "allowlist.csv",
    "users.acl",
    "sdn.csv",
    "sdn_comments.csv",
    "sdn_advanced.xml",
    "node.properties",
    "pom.xml",
}


def _exists(cited: str, doc: Path) -> bool:
    if "*" in cited or "{" in cited or Path(cited).name in _EXAMPLES or cited.startswith(("/", "http", "...")):
        return True  # globs, templates, absolute paths on a user's machine, URLs
    bases = [doc.parent, ROOT, PACKAGE, *(path for path in PACKAGE.iterdir() if path.is_dir())]
    if any((base / cited).exists() for base in bases):
        return True
    if "/" not in cited:  # a bare file name: somewhere in the project's own code, tests, scripts or config
        return any(
            path
            for folder in ("services", "tests", "scripts", "bench", "helm", "docker", "schemas", ".ci")
            for path in (ROOT / folder).rglob(cited)
        )
    return False


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_file_a_doc_cites_exists(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    cited = {match.group(1) or match.group(2) for match in _CITED.finditer(text)}
    assert cited, "no file citation found: the pattern no longer matches the docs"
    missing = sorted(path for path in cited if not _exists(path, doc))
    assert not missing, f"{doc.relative_to(ROOT)} cites files that do not exist: {missing}"
