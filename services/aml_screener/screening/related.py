"""Related addresses: destinations the holder of a listed address controls as surely as the listed one.

OFAC says its address listings are not exhaustive (FAQ 562): property of a listed party must be blocked wherever
it can be told apart. Some addresses can be told apart from the listed bytes alone, with no clustering heuristic:

=========================  ==========  =============================================================================
relation                   match type  which addresses
=========================  ==========  =============================================================================
``same_account``           related     an EVM account and the TRON address of the same 20 bytes (one secp256k1 key
                                       derives both)
``same_pubkey_hash``       related     one 20-byte public-key hash as P2PKH, P2WPKH and P2SH-P2WPKH on Bitcoin and as
                                       P2PKH on Bitcoin Cash and Bitcoin SV (chains that share Bitcoin's legacy
                                       encoding); on Litecoin as P2PKH, P2WPKH and P2SH-P2WPKH
``same_script_hash``       related     one P2SH script hash on Bitcoin, Bitcoin Cash and Bitcoin SV
``associated_token_account`` related   a Solana wallet's associated token accounts for the configured mints
``unified_receiver``       direct      a Zcash unified address and each of its receivers (funds sent to the
                                       unified address reach one of them)
=========================  ==========  =============================================================================

A relation is used in one of two directions, so that a batch still needs one lookup round trip:

* :func:`screening_keys` (screener, per destination): keys of *listed* addresses that would make the destination
  a match. Only relations that can be inverted from the destination's bytes.
* :func:`listing_keys` (list loader, per listed address): keys of *destinations* the listed address reaches through
  relations that cannot be inverted (a P2SH-P2WPKH script hash does not reveal its key hash; an associated token
  account does not reveal its wallet). The table stores the listing under those keys too, marked with the relation.

Destination D matches listing L through relation R exactly when D is in ``listing_keys(L)`` or L is in
``screening_keys(D)``; :mod:`aml_screener.screening.matching` puts the two together. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Final

from Crypto.Hash import RIPEMD160

from aml_screener.screening.addresses import (
    ChainFamily,
    InvalidAddress,
    NormalizedAddress,
    key_for,
    parse_key,
)
from aml_screener.screening.watchlist import Listing

__all__ = [
    "DEFAULT_SOLANA_MINTS",
    "KEY_SCHEME_VERSION",
    "ListingRelations",
    "MatchType",
    "RelatedKey",
    "Relation",
    "SolanaMint",
    "associated_token_account",
    "listing_entries",
    "listing_keys",
    "match_type_of",
    "related_to",
    "screening_keys",
]

#: Version of the rules that turn a listed address into table keys (normalization and the relations applied at
#: list load). Bump it whenever a spelling's key changes or a load-time relation is added: a table built under
#: another version misses keys a screener of this version looks up, so the screener refuses it (fail closed)
#: and the sync rebuilds every table. 2: Litecoin P2SH "3..." keyed as "M...", Zcash TEX/Sapling/unified
#: addresses, load-time relations.
KEY_SCHEME_VERSION: Final = 2


class Relation(StrEnum):
    """How a matched key relates to the listed address (``None`` in a match: the key is the listed one)."""

    SAME_ACCOUNT = "same_account"
    SAME_PUBKEY_HASH = "same_pubkey_hash"
    SAME_SCRIPT_HASH = "same_script_hash"
    ASSOCIATED_TOKEN_ACCOUNT = "associated_token_account"  # noqa: S105 - a relation name, not a secret
    UNIFIED_RECEIVER = "unified_receiver"


class MatchType(StrEnum):
    """``direct``: funds reach the listed destination itself; ``related``: an address its key holder controls."""

    DIRECT = "direct"
    RELATED = "related"


# A unified address's receivers are where funds sent to it land: reaching one is reaching the listed address.
_DIRECT_RELATIONS: Final = frozenset({Relation.UNIFIED_RECEIVER.value})


def match_type_of(relation: str | None) -> MatchType:
    return MatchType.DIRECT if relation is None or relation in _DIRECT_RELATIONS else MatchType.RELATED


@dataclass(frozen=True, slots=True)
class RelatedKey:
    key: str
    relation: Relation


# --------------------------------------------------------------------------------------------------------
# Bitcoin family
# --------------------------------------------------------------------------------------------------------

_SIBLINGS: Final = (ChainFamily.BITCOIN, ChainFamily.BITCOIN_CASH, ChainFamily.BITCOIN_SV)
# Kinds whose payload is a public-key hash (Bitcoin Cash's token-aware P2PKH pays the same script as P2PKH).
_PUBKEY_HASH_KINDS: Final = frozenset({"p2pkh", "p2wpkh", "p2pkh-tokens"})
_SCRIPT_HASH_KINDS: Final = frozenset({"p2sh", "p2sh-tokens"})


def _hash160(data: bytes) -> bytes:
    # RIPEMD-160 from pycryptodome: OpenSSL 3 builds of hashlib may lack it (legacy provider).
    return RIPEMD160.new(hashlib.sha256(data).digest()).digest()


def _p2sh_p2wpkh(pubkey_hash: bytes) -> bytes:
    """Script hash of the BIP-141 P2SH-wrapped P2WPKH redeem script ``OP_0 <20-byte hash>``."""
    return _hash160(b"\x00\x14" + pubkey_hash)


def _sibling_pubkey_hash_keys(pubkey_hash: bytes) -> list[str]:
    return [
        key_for(ChainFamily.BITCOIN, "p2pkh", pubkey_hash),
        key_for(ChainFamily.BITCOIN, "p2wpkh", pubkey_hash),
        key_for(ChainFamily.BITCOIN_CASH, "p2pkh", pubkey_hash),
        key_for(ChainFamily.BITCOIN_SV, "p2pkh", pubkey_hash),
    ]


def _others(address: NormalizedAddress, keys: Sequence[str], relation: Relation) -> tuple[RelatedKey, ...]:
    return tuple(RelatedKey(key, relation) for key in dict.fromkeys(keys) if key != address.key)


# --------------------------------------------------------------------------------------------------------
# Solana associated token accounts
# --------------------------------------------------------------------------------------------------------

_B58_ALPHABET: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
ASSOCIATED_TOKEN_PROGRAM: Final = "ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL"  # noqa: S105 - a program id
TOKEN_PROGRAMS: Final = {
    "token": "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA",
    "token-2022": "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb",
}
# ed25519 (RFC 8032): p = 2^255 - 19, d = -121665/121666 mod p.
_P: Final = 2**255 - 19
_D: Final = -121665 * pow(121666, _P - 2, _P) % _P


def _b58decode_32(text: str) -> bytes:
    value = 0
    for char in text:
        value = value * 58 + _B58_ALPHABET.index(char)
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    raw = b"\0" * (len(text) - len(text.lstrip("1"))) + raw
    if len(raw) != 32:
        raise ValueError(f"{text!r} is not a 32-byte Solana address")
    return raw


def _on_curve(point: bytes) -> bool:
    """Whether 32 bytes decompress to an ed25519 point, exactly as curve25519-dalek's ``decompress().is_some()``
    which Solana's ``Pubkey::is_on_curve`` uses: y (sign bit cleared, not reduced) must give a square
    (y^2 - 1) / (d y^2 + 1)."""
    y = int.from_bytes(point, "little") & ((1 << 255) - 1)
    yy = y * y % _P
    u = (yy - 1) % _P
    v = (_D * yy + 1) % _P
    # Euler's criterion on u*v (same quadratic character as u/v; v is never 0 since -1/d is not a square).
    return pow(u * v % _P, (_P - 1) // 2, _P) in (0, 1)


def _find_program_address(seeds: Sequence[bytes], program: bytes) -> bytes:
    """Solana's ``Pubkey::find_program_address``: the first bump from 255 down whose hash is off the curve."""
    prefix = b"".join(seeds)
    for bump in range(255, -1, -1):
        candidate = hashlib.sha256(prefix + bytes([bump]) + program + b"ProgramDerivedAddress").digest()
        if not _on_curve(candidate):
            return candidate
    raise ValueError("no program address found")  # probability 2^-256


@dataclass(frozen=True, slots=True)
class SolanaMint:
    """A token whose associated token accounts of a listed wallet are related addresses."""

    name: str  # for humans, e.g. "USDC"
    mint: str  # Base58 mint address
    token_program: str = "token"  # noqa: S105 - "token" (SPL Token) or "token-2022", not a secret

    def __post_init__(self) -> None:
        if self.token_program not in TOKEN_PROGRAMS:
            raise ValueError(f"token_program must be one of {sorted(TOKEN_PROGRAMS)}, got {self.token_program!r}")
        _b58decode_32(self.mint)


# The largest stablecoins on Solana (PYUSD is a Token-2022 mint); operators extend or replace the list in the
# sync configuration ([related] in sources.toml).
DEFAULT_SOLANA_MINTS: Final = (
    SolanaMint("USDC", "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", "token"),
    SolanaMint("USDT", "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB", "token"),
    SolanaMint("PYUSD", "2b1kV6DkPAnxd5ixfnxCpjxmKwqjjaYmCZfHsFu24GXo", "token-2022"),
)


def associated_token_account(wallet: bytes, mint: SolanaMint) -> bytes:
    """The associated token account of ``wallet`` (32 bytes) for ``mint`` (SPL Associated Token Account program:
    seeds wallet, token program, mint)."""
    return _find_program_address(
        (wallet, _b58decode_32(TOKEN_PROGRAMS[mint.token_program]), _b58decode_32(mint.mint)),
        _b58decode_32(ASSOCIATED_TOKEN_PROGRAM),
    )


@dataclass(frozen=True, slots=True)
class ListingRelations:
    """Configuration of the load-time relations (only the Solana mints are configurable)."""

    solana_mints: tuple[SolanaMint, ...] = field(default=DEFAULT_SOLANA_MINTS)

    def fingerprint(self) -> str:
        """Changes whenever the keys a table gets would change (with :data:`KEY_SCHEME_VERSION`)."""
        mints = sorted((m.mint, m.token_program) for m in self.solana_mints)
        digest = hashlib.sha256(json.dumps(mints).encode()).hexdigest()[:12]
        return f"{KEY_SCHEME_VERSION}:{digest}"


# --------------------------------------------------------------------------------------------------------
# The two directions
# --------------------------------------------------------------------------------------------------------


def _family_of(key: str) -> str:
    return key[: key.find(":")]


def _parse(key: str) -> NormalizedAddress | None:
    try:
        return parse_key(key)
    except (InvalidAddress, ValueError):
        return None  # not a key normalize() produces (a hand-edited table): no relations


def _tron_screening(address: NormalizedAddress) -> tuple[RelatedKey, ...]:
    return (RelatedKey(key_for(ChainFamily.EVM, "evm", address.payload), Relation.SAME_ACCOUNT),)


def _sibling_screening(address: NormalizedAddress) -> tuple[RelatedKey, ...]:
    if address.kind in _PUBKEY_HASH_KINDS:
        return _others(address, _sibling_pubkey_hash_keys(address.payload), Relation.SAME_PUBKEY_HASH)
    if address.kind in _SCRIPT_HASH_KINDS and len(address.payload) == 20:
        keys = [key_for(family, "p2sh", address.payload) for family in _SIBLINGS]
        return _others(address, keys, Relation.SAME_SCRIPT_HASH)
    return ()


def _litecoin_screening(address: NormalizedAddress) -> tuple[RelatedKey, ...]:
    if address.kind not in ("p2pkh", "p2wpkh"):
        return ()
    keys = [key_for(ChainFamily.LITECOIN, kind, address.payload) for kind in ("p2pkh", "p2wpkh")]
    return _others(address, keys, Relation.SAME_PUBKEY_HASH)


def _unified_receivers(address: NormalizedAddress) -> tuple[RelatedKey, ...]:
    return tuple(RelatedKey(receiver.key, Relation.UNIFIED_RECEIVER) for receiver in address.receivers)


def _wrapped_pubkey_hash(address: NormalizedAddress) -> tuple[RelatedKey, ...]:
    """The P2SH-P2WPKH of a listed public-key hash, on Bitcoin for the BTC/BCH/BSV family, else on its chain."""
    if address.kind not in _PUBKEY_HASH_KINDS:
        return ()
    chain = ChainFamily.LITECOIN if address.family is ChainFamily.LITECOIN else ChainFamily.BITCOIN
    return (RelatedKey(key_for(chain, "p2sh", _p2sh_p2wpkh(address.payload)), Relation.SAME_PUBKEY_HASH),)


_Relate = Callable[[NormalizedAddress], tuple[RelatedKey, ...]]
_SCREENING: Final[dict[str, _Relate]] = {
    ChainFamily.TRON.value: _tron_screening,
    **{family.value: _sibling_screening for family in _SIBLINGS},
    ChainFamily.LITECOIN.value: _litecoin_screening,
    ChainFamily.ZCASH.value: _unified_receivers,
}
_LISTING: Final[dict[str, _Relate]] = {
    **{family.value: _wrapped_pubkey_hash for family in (*_SIBLINGS, ChainFamily.LITECOIN)},
    ChainFamily.ZCASH.value: _unified_receivers,
}


def screening_keys(key: str) -> tuple[RelatedKey, ...]:
    """Keys of listed addresses that make destination ``key`` a match, other than ``key`` itself."""
    family = _family_of(key)
    if family == ChainFamily.EVM.value:
        # Fast path for the most common destination: no parse, the key holds the account in hex.
        return _evm_screening(bytes.fromhex(key[6:]))
    relate = _SCREENING.get(family)
    address = _parse(key) if relate is not None else None
    return relate(address) if relate is not None and address is not None else ()


def related_to(address: NormalizedAddress) -> tuple[RelatedKey, ...]:
    """:func:`screening_keys` of an address already normalized (no second parse: the screener's path)."""
    if address.family is ChainFamily.EVM:
        return _evm_screening(address.payload)
    relate = _SCREENING.get(address.family.value)
    return relate(address) if relate is not None else ()


def _evm_screening(account: bytes) -> tuple[RelatedKey, ...]:
    return (RelatedKey(key_for(ChainFamily.TRON, "tron", account), Relation.SAME_ACCOUNT),)


def listing_keys(key: str, relations: ListingRelations) -> tuple[RelatedKey, ...]:
    """Keys of destinations that listed address ``key`` reaches through relations :func:`screening_keys` cannot
    invert; the list loader stores the listing under them too."""
    family = _family_of(key)
    if family == ChainFamily.SOLANA.value:
        address = _parse(key)
        if address is None:
            return ()
        return tuple(
            RelatedKey(
                key_for(ChainFamily.SOLANA, "account", associated_token_account(address.payload, mint)),
                Relation.ASSOCIATED_TOKEN_ACCOUNT,
            )
            for mint in relations.solana_mints
        )
    relate = _LISTING.get(family)
    address = _parse(key) if relate is not None else None
    return relate(address) if relate is not None and address is not None else ()


def listing_entries(key: str, listing: Listing, relations: ListingRelations) -> Iterator[tuple[str, Listing]]:
    """What the list loader stores for one listing: (key, listing) under the listed key, and under each key of
    :func:`listing_keys` a copy marked with the relation and the listed key."""
    yield key, listing
    for related in listing_keys(key, relations):
        yield related.key, replace(listing, relation=related.relation.value, listed_key=key)
