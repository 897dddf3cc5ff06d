"""`aml-screener api`: serve the pre-screen API; `aml-screener api keys create|list|revoke`: manage its keys file.

    aml-screener api                                   serve (AML_API_* settings; AML_API_KEYS_FILE required)
    aml-screener api keys create --name NAME [--file]  new key: printed once on stdout, its hash added to the file
    aml-screener api keys list [--file]                the entries (id, name, created_at; never a key)
    aml-screener api keys revoke ID [--file]           remove an entry (a running API drops it within
                                                       AML_API_KEYS_RELOAD_SECONDS)

--file defaults to AML_API_KEYS_FILE.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from aml_screener.api.keys import KeysFileError, StoredKey, new_key, read_keys, write_keys
from aml_screener.infra.settings import Settings

EXIT_CONFIG = 2
EXIT_NOT_FOUND = 3


def add_api_commands(parser: argparse.ArgumentParser, settings_or_exit: Callable[..., Settings]) -> None:
    parser.set_defaults(func=lambda args: _serve(settings_or_exit()))
    sub = parser.add_subparsers(dest="api_command")
    keys = sub.add_parser("keys", help="manage the API keys file (keys are stored as SHA-256 hashes)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)

    def file_argument(command: argparse.ArgumentParser) -> None:
        command.add_argument("--file", type=Path, help="the keys file (default: AML_API_KEYS_FILE)")

    create = keys_sub.add_parser("create", help="create a key: print it once, store its hash")
    create.add_argument("--name", required=True, help="who or what uses the key, e.g. withdrawal-form")
    file_argument(create)
    create.set_defaults(func=lambda args: _create(_keys_file(args, settings_or_exit), args.name))
    listing = keys_sub.add_parser("list", help="list the keys (id, name, created_at)")
    file_argument(listing)
    listing.set_defaults(func=lambda args: _list(_keys_file(args, settings_or_exit)))
    revoke = keys_sub.add_parser("revoke", help="remove a key by id")
    revoke.add_argument("id", help="the key id (the 12 hex digits after amlk_)")
    file_argument(revoke)
    revoke.set_defaults(func=lambda args: _revoke(_keys_file(args, settings_or_exit), args.id))


def _serve(settings: Settings) -> int:
    from aml_screener.api.app import run
    from aml_screener.infra.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format.value)
    return run(settings)


def _keys_file(args: argparse.Namespace, settings_or_exit: Callable[..., Settings]) -> Path:
    if args.file is not None:
        return Path(args.file)
    configured = settings_or_exit().api_keys_file
    if not configured:
        print("aml-screener: give --file or set AML_API_KEYS_FILE", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)
    return Path(configured)


def _existing(path: Path) -> dict[str, StoredKey]:
    if not path.exists():
        return {}
    try:
        return dict(read_keys(path))
    except KeysFileError as exc:
        print(f"aml-screener: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def _create(path: Path, name: str) -> int:
    keys = _existing(path)
    key, stored = new_key()
    keys[stored.id] = replace(stored, name=name)
    write_keys(path, keys)
    print(key)
    print(f"key {stored.id} ({name}) added to {path}; the key is shown only now", file=sys.stderr)
    return 0


def _list(path: Path) -> int:
    keys = _existing(path)
    rows = [{"id": key.id, "name": key.name, "created_at": key.created_at} for key in keys.values()]
    print(json.dumps(rows, indent=2))
    return 0


def _revoke(path: Path, key_id: str) -> int:
    keys = _existing(path)
    if keys.pop(key_id, None) is None:
        print(f"aml-screener: no key {key_id} in {path}", file=sys.stderr)
        return EXIT_NOT_FOUND
    write_keys(path, keys)
    print(f"key {key_id} revoked in {path}", file=sys.stderr)
    return 0
