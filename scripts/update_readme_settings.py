"""Regenerate the settings table in README.md (between the settings:start/end markers) from the Settings class."""

from __future__ import annotations

from pathlib import Path

from aml_screener.cli import settings_markdown

START, END = "<!-- settings:start -->\n", "\n<!-- settings:end -->"


def main() -> None:
    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = readme.read_text()
    head, rest = text.split(START, 1)
    _old, tail = rest.split(END, 1)
    readme.write_text(head + START + settings_markdown().strip() + END + tail)


if __name__ == "__main__":
    main()
