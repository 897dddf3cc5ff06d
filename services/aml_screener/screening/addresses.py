"""Address normalization: when are two address strings "the same address"?

This module owns one decision for the whole service: turning a ``(network, address)`` pair as typed by a
user, an exchange or a watchlist into a :class:`NormalizedAddress` whose ``key`` is the watchlist lookup key.
The watchlist loader and the screener both call :func:`normalize` (the loader through
:func:`normalize_listed`), so a string that is listed and a string that is withdrawn to are the same address
exactly when their keys are equal. It is pure (no I/O, no clock, no globals that change) and sits on the hot
path, so the common paths avoid regexes, exceptions and per-call table building.

Rules, in short (details and spec references next to the code):

* A **family** is one address space and the key namespace: every EVM chain shares ``evm:``, so the same
  ``0x`` address on Ethereum, BSC or Polygon is one key; Bitcoin and its forks each have their own
  family even where the strings coincide (``3...`` is ``btc:3...`` on Bitcoin, ``ltc:3...`` on Litecoin).
* The key names the **destination funds reach**, not the spelling: where a format can spell one destination
  in several ways, every spelling maps to one key. Spellings that only add routing data for the recipient
  (a Monero payment ID, an XRP destination tag, a Stellar muxed id, a Bitcoin Cash token-awareness flag) map
  to the key of the underlying account, because the funds land in the same account either way.
* **EVM**: ``0x`` + 40 hex digits; a mixed-case body must carry a valid EIP-55 checksum. Key is lowercase.
* **Base58Check** (Bitcoin family, TRON, XRP): case-sensitive and never re-cased; the checksum, the payload
  length and the network's version bytes are all verified. Key is the exact string (Base58 spellings are
  unique). TRON's hex form ``41`` + 40 hex digits is keyed by its Base58Check form ``T...``.
* **Segwit bech32/bech32m** (BIP-173/BIP-350) and plain bech32 (BNB Beacon Chain ``bnb1...``): single-case,
  checksum variant tied to the witness version. Key is lowercase.
* **Bitcoin Cash**: CashAddr (with or without the ``bitcoincash:`` prefix, either case) and the legacy
  Base58Check form are one address; the key is the lowercase CashAddr payload without prefix
  (``bch:qpm2...``), also for legacy input.
* **Monero** (own Base58 variant, Keccak-256 checksum), **Solana** (Base58 of a 32-byte key, no checksum),
  **Stellar** (StrKey, CRC16-XModem): case-sensitive, key is the exact string of the account.
* Input is never repaired: surrounding whitespace, wrong case of a case-sensitive format, or text appended to
  an address make it invalid (:class:`InvalidAddress` with a stable ``reason`` code), never "fixed".

Adding a format means: a member of :class:`AddressFormat`, a ``claims``/``parse`` pair registered in
``_FORMATS``, any parameters it needs as new :class:`Network` fields, and network rows in ``_NETWORK_TABLE``.
Callers of :func:`normalize` do not change.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, TypeVar

from Crypto.Hash import keccak

_T = TypeVar("_T")

__all__ = [
    "MAX_ADDRESS_LENGTH",
    "MAX_UNIFIED_ADDRESS_LENGTH",
    "AddressError",
    "AddressFormat",
    "ChainFamily",
    "InvalidAddress",
    "Network",
    "NormalizedAddress",
    "UnsupportedNetwork",
    "encode_unified_address",
    "f4jumble",
    "f4jumble_inv",
    "key_for",
    "known_networks",
    "network_of_key",
    "networks_for_asset",
    "normalize",
    "normalize_for_lookup",
    "normalize_key",
    "normalize_listed",
    "parse_key",
    "resolve_network",
    "to_checksum_address",
]

#: Longest input looked at at all (on networks without longer formats); anything longer is rejected before any
#: parsing work.
MAX_ADDRESS_LENGTH: Final = 128
#: Longest Zcash unified address looked at. ZIP-316 sets no maximum; three receivers and the revision-2 metadata
#: take about 230 characters, the longest official test vector (with unknown item types) 509.
MAX_UNIFIED_ADDRESS_LENGTH: Final = 1024


class ChainFamily(StrEnum):
    """The key namespace: one family is one address space."""

    EVM = "evm"
    BITCOIN = "btc"
    LITECOIN = "ltc"
    DOGECOIN = "doge"
    DASH = "dash"
    ZCASH = "zec"  # transparent t-addresses, TEX, Sapling and unified addresses
    BITCOIN_GOLD = "btg"
    BITCOIN_CASH = "bch"  # CashAddr and legacy Base58, keyed by the CashAddr form
    BITCOIN_SV = "bsv"
    VERGE = "xvg"
    TRON = "trx"
    BNB_BEACON = "bnb"  # BNB Beacon Chain (BEP-2) bech32 "bnb1..."; BNB Smart Chain is EVM
    XRP = "xrp"
    MONERO = "xmr"
    SOLANA = "sol"
    STELLAR = "xlm"


class AddressFormat(StrEnum):
    """A textual address encoding; each has one validator in ``_FORMATS``."""

    EVM_HEX = "evm-hex"
    BASE58CHECK = "base58check"
    SEGWIT = "segwit"  # bech32 / bech32m, BIP-173 / BIP-350
    CASHADDR = "cashaddr"  # Bitcoin Cash CashAddr
    BCH_LEGACY = "bch-legacy"  # Bitcoin Cash legacy Base58Check, keyed by its CashAddr form
    TRON_HEX = "tron-hex"  # "41" + 40 hex digits, keyed by its Base58Check form
    BECH32 = "bech32"  # plain BIP-173 bech32 of a 20-byte account (not segwit), e.g. BNB Beacon Chain
    XRP_BASE58 = "xrp-base58"  # XRP Ledger classic address and X-address (Ripple Base58 alphabet)
    MONERO_BASE58 = "monero-base58"  # Monero block-wise Base58 with a Keccak-256 checksum
    SOLANA_BASE58 = "solana-base58"  # Base58 of a 32-byte public key, no checksum
    STRKEY = "strkey"  # Stellar SEP-23 StrKey (base32 + CRC16-XModem)
    ZCASH_BECH32 = "zcash-bech32"  # Zcash TEX (ZIP-320), Sapling "zs1" and unified addresses (ZIP-316)


@dataclass(frozen=True, slots=True)
class NormalizedAddress:
    """A validated address. Two inputs denote the same address exactly when their ``key`` is equal."""

    family: ChainFamily
    key: str  # f"{family.value}:{canonical}"
    # EIP-55 for EVM, lowercase for bech32 (also Zcash TEX, Sapling and unified addresses), "bitcoincash:" +
    # lowercase CashAddr for Bitcoin Cash (also for legacy input), the Base58Check form for TRON (also for hex
    # input), Litecoin's legacy P2SH "3..." in its current "M..." form, the exact string otherwise.
    display: str
    # "evm"; "p2pkh", "p2sh", "p2wpkh", "p2wsh", "p2tr", "segwit"; Bitcoin Cash also "p2sh32" and the
    # token-aware "p2pkh-tokens", "p2sh-tokens", "p2sh32-tokens"; "tron"; "bnb"; XRP "classic", "x-address";
    # Monero "standard", "integrated", "subaddress"; Solana "account"; Stellar "account", "muxed"; Zcash also
    # "tex", "sapling", "orchard" (a receiver of a unified address) and "unified".
    kind: str
    # The bytes the key names, where a related address can be derived from them (screening/related.py): the
    # 20-byte hash of P2PKH/P2SH/P2WPKH (version bytes stripped), the witness program, the 20-byte EVM or TRON
    # account, the 32-byte Solana key, a Zcash receiver's raw bytes. Empty where nothing derives from it.
    # Derived from the key, so not part of equality.
    payload: bytes = field(default=b"", compare=False)
    # Zcash unified address: its receivers, each a NormalizedAddress of its own (empty otherwise).
    receivers: tuple[NormalizedAddress, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class Network:
    """One supported network and the parameters its address formats need."""

    name: str  # canonical, lowercase, e.g. "bitcoin-cash"
    family: ChainFamily
    title: str  # for messages, e.g. "Bitcoin Cash"
    formats: tuple[AddressFormat, ...]  # tried in this order (see ``_Entry``); the last one accepts any string
    # Base58Check: (version bytes, kind). All versions of one network have the same length; the payload is
    # version + 20-byte hash (HASH160 for Bitcoin-family, Keccak-derived for TRON).
    base58_versions: tuple[tuple[bytes, str], ...] = ()
    segwit_hrp: str | None = None  # BIP-173 human-readable part, lowercase
    bech32_hrp: str | None = None  # plain (non-segwit) bech32 human-readable part, lowercase
    aliases: tuple[str, ...] = ()
    max_length: int = 0  # longest input looked at (0: MAX_ADDRESS_LENGTH)


class AddressError(StrEnum):
    """Why an address is not valid for its network: stable codes (decision reasons, metric labels, list
    rejections); a StrEnum, so each compares equal to its string."""

    EMPTY = "empty"
    TOO_LONG = "too_long"
    WHITESPACE = "whitespace"
    BAD_FORMAT = "bad_format"
    BAD_CHARACTERS = "bad_characters"
    BAD_LENGTH = "bad_length"
    MIXED_CASE = "mixed_case"
    BAD_HRP = "bad_hrp"
    BAD_CHECKSUM = "bad_checksum"
    BAD_ENCODING = "bad_encoding"
    BAD_VERSION = "bad_version"
    BAD_EIP55_CHECKSUM = "bad_eip55_checksum"
    BAD_WITNESS_PROGRAM = "bad_witness_program"
    UNSUPPORTED_FORMAT = "unsupported_format"


class InvalidAddress(ValueError):
    """The address is not a valid address of the network. ``reason`` is a short stable machine code."""

    reason: AddressError
    network: str
    address: str

    def __init__(self, reason: AddressError, network: str, address: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.network = network
        self.address = address

    def __reduce__(self) -> tuple[type[InvalidAddress], tuple[AddressError, str, str, str]]:
        return (type(self), (self.reason, self.network, self.address, str(self)))

    @property
    def specificity(self) -> int:
        """How far parsing got before it failed: of several failures, the highest is the one to report."""
        return _SPECIFICITY.get(self.reason, 0)


class UnsupportedNetwork(ValueError):
    """The network (or, from :func:`normalize_listed`, the asset ticker) is not known."""

    network: str

    def __init__(self, network: str, message: str | None = None) -> None:
        if message is None:
            message = f"unsupported network {_shown(network)}; known networks: {', '.join(known_networks())}"
        super().__init__(message)
        self.network = network

    def __reduce__(self) -> tuple[type[UnsupportedNetwork], tuple[str, str]]:
        return (type(self), (self.network, str(self)))


# --------------------------------------------------------------------------------------------------------
# Network table
# --------------------------------------------------------------------------------------------------------

_EVM: Final = (AddressFormat.EVM_HEX,)
_B58: Final = (AddressFormat.BASE58CHECK,)
# Segwit first: it only claims strings that start with a bech32 prefix; Base58 takes everything else.
_SEGWIT_B58: Final = (AddressFormat.SEGWIT, AddressFormat.BASE58CHECK)

_NETWORK_TABLE: Final[tuple[Network, ...]] = (
    Network("ethereum", ChainFamily.EVM, "Ethereum", _EVM,
            aliases=("eth", "erc20", "erc-20", "ethereum-mainnet", "eth-mainnet")),
    Network("ethereum-classic", ChainFamily.EVM, "Ethereum Classic", _EVM,
            aliases=("etc", "ethereumclassic", "eth-classic")),
    Network("bsc", ChainFamily.EVM, "BNB Smart Chain", _EVM,
            aliases=("bep20", "bep-20", "bnb-smart-chain", "binance-smart-chain", "bsc-mainnet")),
    Network("polygon", ChainFamily.EVM, "Polygon", _EVM, aliases=("matic", "polygon-pos", "pol")),
    Network("arbitrum", ChainFamily.EVM, "Arbitrum", _EVM, aliases=("arb", "arbitrum-one", "arb1")),
    Network("optimism", ChainFamily.EVM, "Optimism", _EVM, aliases=("op", "op-mainnet")),
    Network("base", ChainFamily.EVM, "Base", _EVM, aliases=("base-mainnet",)),
    Network("avalanche", ChainFamily.EVM, "Avalanche C-Chain", _EVM,
            aliases=("avax", "avalanche-c", "avax-c", "avaxc", "c-chain", "avalanche-c-chain")),
    Network("bitcoin", ChainFamily.BITCOIN, "Bitcoin", _SEGWIT_B58,
            base58_versions=((b"\x00", "p2pkh"), (b"\x05", "p2sh")),
            segwit_hrp="bc", aliases=("btc", "xbt")),
    # Litecoin P2SH moved from 0x05 ("3...") to 0x32 ("M..."); wallets and lists still carry the legacy form. Both
    # spell the same output script, so both are keyed by the first (current) version of the kind: "M...".
    Network("litecoin", ChainFamily.LITECOIN, "Litecoin", _SEGWIT_B58,
            base58_versions=((b"\x30", "p2pkh"), (b"\x32", "p2sh"), (b"\x05", "p2sh")),
            segwit_hrp="ltc", aliases=("ltc",)),
    Network("dogecoin", ChainFamily.DOGECOIN, "Dogecoin", _B58,
            base58_versions=((b"\x1e", "p2pkh"), (b"\x16", "p2sh")), aliases=("doge",)),
    Network("dash", ChainFamily.DASH, "Dash", _B58,
            base58_versions=((b"\x4c", "p2pkh"), (b"\x10", "p2sh"))),
    # Zcash transparent addresses have a two-byte version: t1 = 1CB8 (P2PKH), t3 = 1CBD (P2SH). TEX (ZIP-320),
    # Sapling (zs1) and unified addresses (ZIP-316, up to several hundred characters) are bech32/bech32m and are
    # claimed first by their human-readable part.
    Network("zcash", ChainFamily.ZCASH, "Zcash", (AddressFormat.ZCASH_BECH32, AddressFormat.BASE58CHECK),
            base58_versions=((b"\x1c\xb8", "p2pkh"), (b"\x1c\xbd", "p2sh")), aliases=("zec",),
            max_length=MAX_UNIFIED_ADDRESS_LENGTH),
    Network("bitcoin-gold", ChainFamily.BITCOIN_GOLD, "Bitcoin Gold", _B58,
            base58_versions=((b"\x26", "p2pkh"), (b"\x17", "p2sh")), aliases=("btg", "bitcoingold")),
    # Bitcoin Cash and Bitcoin SV kept Bitcoin's legacy version bytes. Bitcoin Cash's legacy form is keyed by
    # its CashAddr form (CashAddr is tried first: it claims only strings that can be CashAddr).
    Network("bitcoin-cash", ChainFamily.BITCOIN_CASH, "Bitcoin Cash",
            (AddressFormat.CASHADDR, AddressFormat.BCH_LEGACY),
            base58_versions=((b"\x00", "p2pkh"), (b"\x05", "p2sh")), aliases=("bch", "bitcoincash")),
    Network("bitcoin-sv", ChainFamily.BITCOIN_SV, "Bitcoin SV", _B58,
            base58_versions=((b"\x00", "p2pkh"), (b"\x05", "p2sh")), aliases=("bsv", "bitcoinsv")),
    Network("verge", ChainFamily.VERGE, "Verge", _B58,
            base58_versions=((b"\x1e", "p2pkh"), (b"\x21", "p2sh")), aliases=("xvg",)),
    # TRON: Base58Check of 0x41 + 20 bytes, which always renders as 34 characters starting with "T"; the same
    # 21 bytes in hex ("41" + 40 hex digits) are the node API's form. Hex is tried first: it claims only
    # strings that cannot be a TRON Base58 address, so the common Base58 path pays one cheap test.
    Network("tron", ChainFamily.TRON, "TRON", (AddressFormat.TRON_HEX, AddressFormat.BASE58CHECK),
            base58_versions=((b"\x41", "tron"),), aliases=("trx", "trc20", "trc-20")),
    # BNB Beacon Chain (formerly Binance Chain, BEP-2 tokens): bech32 "bnb1" + 20-byte account.
    # Not "bnb" as a network name: the ticker BNB is also BNB Smart Chain (see _ASSET_NETWORKS).
    Network("bnb-beacon-chain", ChainFamily.BNB_BEACON, "BNB Beacon Chain", (AddressFormat.BECH32,),
            bech32_hrp="bnb", aliases=("bnb-beacon", "bep2", "bep-2", "binance-chain")),
    Network("xrp-ledger", ChainFamily.XRP, "XRP Ledger", (AddressFormat.XRP_BASE58,),
            aliases=("xrp", "xrpl", "ripple")),
    Network("monero", ChainFamily.MONERO, "Monero", (AddressFormat.MONERO_BASE58,), aliases=("xmr",)),
    Network("solana", ChainFamily.SOLANA, "Solana", (AddressFormat.SOLANA_BASE58,), aliases=("sol", "spl")),
    Network("stellar", ChainFamily.STELLAR, "Stellar", (AddressFormat.STRKEY,),
            aliases=("xlm", "stellar-lumens")),
)  # fmt: skip

# Candidate networks per watchlist ticker (OFAC spells Bitcoin "XBT"), most likely first. OFAC files
# EVM, TRON and Omni-layer (Bitcoin) addresses all under USDT; "BNB" is both the BNB Smart Chain (BEP-20, 0x)
# and the BNB Beacon Chain (BEP-2, bnb1) coin.
_ASSET_NETWORKS: Final[dict[str, tuple[str, ...]]] = {
    "XBT": ("bitcoin",),
    "BTC": ("bitcoin",),
    "ETH": ("ethereum",),
    "USDT": ("ethereum", "tron", "bitcoin"),
    "USDC": ("ethereum",),
    "TRX": ("tron",),
    "LTC": ("litecoin",),
    "BCH": ("bitcoin-cash",),  # CashAddr and legacy forms
    "BSV": ("bitcoin-sv",),
    "BTG": ("bitcoin-gold",),
    "DASH": ("dash",),
    "ZEC": ("zcash",),
    "XVG": ("verge",),
    "ETC": ("ethereum-classic",),
    "ARB": ("arbitrum",),
    "BSC": ("bsc",),
    "BNB": ("bsc", "bnb-beacon-chain"),
    "DOGE": ("dogecoin",),
    "XRP": ("xrp-ledger",),
    "XMR": ("monero",),
    "SOL": ("solana",),
    "XLM": ("stellar",),
}


# --------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------

# How far parsing got before failing; normalize_listed reports the failure that got furthest.
_SPECIFICITY: Final[dict[AddressError, int]] = {
    AddressError.EMPTY: 0,
    AddressError.TOO_LONG: 0,
    AddressError.WHITESPACE: 0,
    AddressError.BAD_FORMAT: 1,
    AddressError.BAD_CHARACTERS: 2,
    AddressError.BAD_LENGTH: 3,
    AddressError.MIXED_CASE: 3,
    AddressError.BAD_HRP: 3,
    AddressError.BAD_CHECKSUM: 4,
    # right alphabet and length, but not a canonical encoding (padding bits, block overflow)
    AddressError.BAD_ENCODING: 4,
    AddressError.BAD_VERSION: 5,
    AddressError.BAD_EIP55_CHECKSUM: 5,
    AddressError.BAD_WITNESS_PROGRAM: 5,
    # no longer produced (CashAddr is parsed now); kept for the rank of stored reasons
    AddressError.UNSUPPORTED_FORMAT: 6,
}


def _shown(text: str) -> str:
    """repr() of user input for messages, cut so that a huge input does not make a huge message."""
    if len(text) > MAX_ADDRESS_LENGTH:
        return f"{text[:64]!r}... ({len(text)} characters)"
    return repr(text)


def _invalid(net: Network, address: str, reason: AddressError, detail: str) -> InvalidAddress:
    return InvalidAddress(reason, net.name, address, f"{_shown(address)} is not a valid {net.title} address: {detail}")


# --------------------------------------------------------------------------------------------------------
# EVM (EIP-55)
# --------------------------------------------------------------------------------------------------------

_HEX_DIGITS: Final = "0123456789abcdef"
# bytes.translate tables for EIP-55 (all C-level): hash nibble >= 8 -> 0x20; hex letter -> 0x20.
# XOR-ing 0x20 into a lowercase ASCII letter upper-cases it.
_NIBBLE_HIGH: Final = bytes(0x20 if chr(i) in "89abcdef" else 0 for i in range(256))
_IS_HEX_LETTER: Final = bytes(0x20 if chr(i) in "abcdef" else 0 for i in range(256))


def _eip55_body(lower_body: str) -> str:
    """EIP-55 casing of a 40-digit lowercase hex body (no 0x)."""
    # EIP-55: hash = keccak256(lowercase hex body as ASCII); the i-th hex letter is upper case iff the
    # i-th nibble of the hash is >= 8. Keccak-256 is the pre-standard padding, not hashlib's SHA3-256.
    raw = lower_body.encode("ascii")
    hash_hex = keccak.new(digest_bits=256, data=raw).digest().hex()[:40].encode("ascii")
    mask = int.from_bytes(hash_hex.translate(_NIBBLE_HIGH), "big") & int.from_bytes(
        raw.translate(_IS_HEX_LETTER), "big"
    )
    return (int.from_bytes(raw, "big") ^ mask).to_bytes(40, "big").decode("ascii")


def to_checksum_address(hex40: str) -> str:
    """EIP-55 checksummed form ``0x...`` of 40 hex digits (with or without ``0x``, any case)."""
    body = hex40[2:] if hex40[:2] in ("0x", "0X") else hex40
    lower = body.lower()
    if len(lower) != 40 or not lower.isascii() or lower.strip(_HEX_DIGITS):
        raise ValueError(f"expected 40 hex digits, got {_shown(hex40)}")
    return "0x" + _eip55_body(lower)


def _evm_lower_body(net: Network, address: str) -> tuple[str, str | None]:
    """Validate an EVM address; return (lowercase body, display if already known to be EIP-55)."""
    if address[:2] != "0x":
        if address[:2] == "0X":
            raise _invalid(net, address, AddressError.BAD_CHARACTERS, "the prefix must be a lowercase '0x'")
        # Not this format at all (no 0x prefix): ranked below a bad character inside a recognised format.
        raise _invalid(net, address, AddressError.BAD_FORMAT, "an EVM address starts with '0x'")
    if len(address) != 42:
        raise _invalid(
            net, address, AddressError.BAD_LENGTH, f"expected '0x' + 40 hex digits, got {len(address) - 2} characters"
        )
    body = address[2:]
    lower = body.lower()
    # str.strip(chars) removes every leading/trailing char in the set: empty result <=> all are hex digits.
    # (int(body, 16) would also accept "_", "+" and whitespace.)
    if lower.strip(_HEX_DIGITS):
        raise _invalid(net, address, AddressError.BAD_CHARACTERS, "the 40 characters after '0x' must be hex digits")
    if body == lower or body == body.upper():
        # EIP-55: an all-lowercase or all-uppercase body carries no checksum and is valid as is.
        return lower, None
    if _eip55_body(lower) != body:
        raise _invalid(
            net,
            address,
            AddressError.BAD_EIP55_CHECKSUM,
            "mixed-case hex must match its EIP-55 checksum (the case of some letters is wrong)",
        )
    return lower, address


def _parse_evm(net: Network, address: str) -> NormalizedAddress:
    lower, display = _evm_lower_body(net, address)
    if display is None:
        display = "0x" + _eip55_body(lower)
    return NormalizedAddress(ChainFamily.EVM, "evm:0x" + lower, display, "evm", bytes.fromhex(lower))


# --------------------------------------------------------------------------------------------------------
# Base58 and Base58Check (Bitcoin family, TRON, XRP)
# --------------------------------------------------------------------------------------------------------

_B58_ALPHABET: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BAD_DIGIT: Final = 0xFF  # translate-table marker for "not in the alphabet"


def _digit_table(alphabet: str) -> bytes:
    """bytes.translate table: ASCII code -> digit value, _BAD_DIGIT for characters outside ``alphabet``."""
    return bytes(alphabet.index(chr(i)) if chr(i) in alphabet else _BAD_DIGIT for i in range(256))


# (0, O, I and l are deliberately absent from Base58.)
_B58_DIGITS: Final = _digit_table(_B58_ALPHABET)
# XRP Ledger: the same Base58Check construction over a permuted alphabet, so that account ids (version 0x00)
# begin with "r" (https://xrpl.org/docs/references/protocol/data-types/base58-encodings).
_XRP_ALPHABET: Final = "rpshnaf39wBUDNEGHJKLM4PQRST7VWXYZ2bcdeCg65jkm8oFqi1tuvAxyz"
_XRP_DIGITS: Final = _digit_table(_XRP_ALPHABET)


def _b58_decode(net: Network, address: str, table: bytes, alphabet: str) -> bytes:
    """Base58 string -> bytes; a leading zero digit (alphabet[0]) is one leading zero byte."""
    digits = address.encode("ascii").translate(table)  # ASCII is checked by _precheck
    if _BAD_DIGIT in digits:
        bad = address[digits.index(_BAD_DIGIT)]
        raise _invalid(net, address, AddressError.BAD_CHARACTERS, f"{bad!r} is not a Base58 character")
    value = 0
    for digit in digits:
        value = value * 58 + digit
    # Base58 keeps leading zero bytes as leading zero digits, so the decoded length is (#leading zero digits) +
    # bytes of the number. This makes the string <-> bytes mapping one-to-one: the exact string is a canonical key.
    size = len(address) - len(address.lstrip(alphabet[0])) + (value.bit_length() + 7) // 8
    return value.to_bytes(size, "big")


# Two Base58 digits at a time (58^2 = 3,364 strings per alphabet): half the big-integer divisions, 2.2x faster
# than one digit at a time (measured 4.0 vs 8.9 us for 25 bytes). Related-address keys (the TRON twin of every EVM
# destination) are Base58Check-encoded on the screener's hot path.
_B58_PAIRS: Final = {
    alphabet: tuple(first + second for first in alphabet for second in alphabet)
    for alphabet in (_B58_ALPHABET, _XRP_ALPHABET)
}


def _b58_encode(raw: bytes, alphabet: str) -> str:
    value = int.from_bytes(raw, "big")
    pairs = _B58_PAIRS[alphabet]
    out: list[str] = []
    while value >= 3364:
        value, pair = divmod(value, 3364)
        out.append(pairs[pair])
    head = ((alphabet[value // 58] if value >= 58 else "") + alphabet[value % 58]) if value else ""
    return alphabet[0] * (len(raw) - len(raw.lstrip(b"\0"))) + head + "".join(reversed(out))


def _sha256d_checksum(payload: bytes) -> bytes:
    # Base58Check: checksum = first 4 bytes of SHA-256(SHA-256(payload)) (Bitcoin, TRON and XRP alike).
    return hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]


def _b58check_payload(net: Network, address: str, table: bytes, alphabet: str) -> bytes:
    """Decode Base58Check and verify its checksum; return the payload (version + data, no checksum)."""
    raw = _b58_decode(net, address, table, alphabet)
    if len(raw) < 5:
        raise _invalid(net, address, AddressError.BAD_LENGTH, "it is too short to carry a Base58Check checksum")
    payload = raw[:-4]
    # Checked before the length, so a typo (inserted or dropped character) reads as a checksum error and a
    # well-formed Base58Check string of another network (e.g. a 2-byte-version Zcash address on Bitcoin) as a
    # length/version error.
    if _sha256d_checksum(payload) != raw[-4:]:
        raise _invalid(net, address, AddressError.BAD_CHECKSUM, "the Base58Check checksum does not match (typo?)")
    return payload


def _b58check_versioned(net: Network, address: str) -> tuple[bytes, str]:
    """(payload, kind) of a Base58Check address of ``net``: checksum, length and version byte(s) verified.

    The hot path of every Bitcoin-family and TRON lookup, so _b58_decode and _b58check_payload are inlined.
    """
    digits = address.encode("ascii").translate(_B58_DIGITS)  # ASCII is checked by _precheck
    if _BAD_DIGIT in digits:
        bad = address[digits.index(_BAD_DIGIT)]
        raise _invalid(net, address, AddressError.BAD_CHARACTERS, f"{bad!r} is not a Base58 character")
    value = 0
    for digit in digits:
        value = value * 58 + digit
    size = len(address) - len(address.lstrip("1")) + (value.bit_length() + 7) // 8  # see _b58_decode
    if size < 5:
        raise _invalid(net, address, AddressError.BAD_LENGTH, "it is too short to carry a Base58Check checksum")
    raw = value.to_bytes(size, "big")
    payload = raw[:-4]
    if hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] != raw[-4:]:  # see _b58check_payload
        raise _invalid(net, address, AddressError.BAD_CHECKSUM, "the Base58Check checksum does not match (typo?)")
    versions, version_len, expected, _canonical = _B58_PARAMS[net.name]
    if size != expected:
        raise _invalid(
            net,
            address,
            AddressError.BAD_LENGTH,
            f"it decodes to {size} bytes, not {expected} (version, 20-byte hash, checksum)",
        )
    kind = versions.get(payload[:version_len])
    if kind is None:
        raise _invalid(
            net,
            address,
            AddressError.BAD_VERSION,
            f"version byte(s) 0x{payload[:version_len].hex()} belong to another network or address type",
        )
    return payload, kind


def _b58check_encode(payload: bytes) -> str:
    return _b58_encode(payload + _sha256d_checksum(payload), _B58_ALPHABET)


def _parse_base58check(net: Network, address: str) -> NormalizedAddress:
    payload, kind = _b58check_versioned(net, address)
    _versions, version_len, _expected, canonical = _B58_PARAMS[net.name]
    body = payload[version_len:]
    current = canonical[kind]
    if payload[:version_len] != current:
        # A kind with two version bytes in use (Litecoin P2SH "3..." and "M..."): the same output script, so the
        # key is the spelling with the kind's current version, whichever was typed.
        spelled = _b58check_encode(current + body)
        return NormalizedAddress(net.family, f"{net.family.value}:{spelled}", spelled, kind, body)
    return NormalizedAddress(net.family, f"{net.family.value}:{address}", address, kind, body)


def _claims_any(net: Network, address: str) -> bool:
    return True


# --------------------------------------------------------------------------------------------------------
# TRON hex form
# --------------------------------------------------------------------------------------------------------


def _claims_tron_hex(net: Network, address: str) -> bool:
    # A TRON Base58 address starts with 'T' and has 34 characters, so neither "0x..."/"41..." nor a long hex
    # string can be one: claiming them gives hex typos a hex error and never hides a Base58 address.
    return address[:2] in ("0x", "41") or (len(address) >= 40 and not address.lower().strip(_HEX_DIGITS))


def _parse_tron_hex(net: Network, address: str) -> NormalizedAddress:
    # TRON's node API spells an address as hex of the same 21 bytes its Base58Check form encodes: the prefix
    # byte 0x41 (mainnet) + 20-byte account id (https://developers.tron.network/docs/account, "Account
    # Address Format"). Hex carries no checksum and no case convention, so any case is the same address;
    # the key is the Base58Check form, which is what lists and wallets show.
    body = address[2:] if address[:2] == "0x" else address
    if len(body) != 42:
        raise _invalid(
            net,
            address,
            AddressError.BAD_LENGTH,
            f"a TRON hex address is '41' + 40 hex digits, got {len(body)} characters",
        )
    lower = body.lower()
    if lower.strip(_HEX_DIGITS):
        raise _invalid(net, address, AddressError.BAD_CHARACTERS, "a TRON hex address consists of hex digits")
    if lower[:2] != "41":
        raise _invalid(
            net, address, AddressError.BAD_VERSION, "a TRON hex address starts with the mainnet prefix byte 41"
        )
    raw = bytes.fromhex(lower)
    display = _b58_encode(raw + _sha256d_checksum(raw), _B58_ALPHABET)
    return NormalizedAddress(net.family, f"{net.family.value}:{display}", display, "tron", raw[1:])


# --------------------------------------------------------------------------------------------------------
# XRP Ledger: classic addresses and X-addresses
# --------------------------------------------------------------------------------------------------------

# XLS-5d X-address: Base58Check (XRP alphabet) of a 2-byte network prefix, the 20-byte account id, a flag
# byte and a 64-bit little-endian destination tag (https://github.com/XRPLF/XRPL-Standards, XLS-0005).
_XADDRESS_MAINNET: Final = b"\x05\x44"  # "X..."
_XADDRESS_TESTNET: Final = b"\x04\x93"  # "T..."


def _parse_xrp(net: Network, address: str) -> NormalizedAddress:
    payload = _b58check_payload(net, address, _XRP_DIGITS, _XRP_ALPHABET)
    if len(payload) == 21:
        # Classic address: version 0x00 + 20-byte account id (https://xrpl.org/docs/concepts/accounts/addresses).
        if payload[0] != 0:
            raise _invalid(
                net, address, AddressError.BAD_VERSION, f"version byte 0x{payload[0]:02x} is not an account id (0x00)"
            )
        return NormalizedAddress(net.family, f"{net.family.value}:{address}", address, "classic")
    if len(payload) == 31:
        if payload[:2] == _XADDRESS_TESTNET:
            raise _invalid(net, address, AddressError.BAD_VERSION, "it is a test-network X-address")
        if payload[:2] != _XADDRESS_MAINNET:
            raise _invalid(net, address, AddressError.BAD_VERSION, "it is not an X-address (unknown prefix bytes)")
        flag, tag = payload[22], payload[23:]
        # XLS-5d: flag 0 = no tag (all 8 tag bytes zero), 1 = 32-bit tag (upper 4 bytes zero); nothing else.
        if flag > 1 or tag[4:] != b"\0\0\0\0" or (flag == 0 and tag != bytes(8)):
            raise _invalid(
                net, address, AddressError.BAD_VERSION, "its tag flags or tag bytes are not a valid X-address"
            )
        # The destination tag only tells the recipient which customer paid; the funds reach the account.
        classic_payload = b"\x00" + payload[2:22]
        classic = _b58_encode(classic_payload + _sha256d_checksum(classic_payload), _XRP_ALPHABET)
        return NormalizedAddress(net.family, f"{net.family.value}:{classic}", address, "x-address")
    raise _invalid(
        net,
        address,
        AddressError.BAD_LENGTH,
        f"it decodes to {len(payload) + 4} bytes, not 25 (classic address) or 35 (X-address)",
    )


# --------------------------------------------------------------------------------------------------------
# Solana
# --------------------------------------------------------------------------------------------------------


def _parse_solana(net: Network, address: str) -> NormalizedAddress:
    # A Solana address is the Base58 (Bitcoin alphabet) encoding of a 32-byte ed25519 public key or program-
    # derived address; there is no version byte and no checksum
    # (https://solana.com/docs/core/accounts). 32 bytes take 32..44 characters.
    if not 32 <= len(address) <= 44:
        # Characters first, so that e.g. a hex string reads as "not Base58" rather than "wrong length".
        _b58_decode(net, address, _B58_DIGITS, _B58_ALPHABET)
        raise _invalid(
            net, address, AddressError.BAD_LENGTH, f"a Solana address has 32 to 44 characters, not {len(address)}"
        )
    raw = _b58_decode(net, address, _B58_DIGITS, _B58_ALPHABET)
    if len(raw) != 32:
        raise _invalid(
            net, address, AddressError.BAD_LENGTH, f"it decodes to {len(raw)} bytes, not a 32-byte public key"
        )
    return NormalizedAddress(net.family, f"{net.family.value}:{address}", address, "account", raw)


# --------------------------------------------------------------------------------------------------------
# bech32 (BIP-173) and bech32m (BIP-350): segwit addresses and plain bech32 accounts
# --------------------------------------------------------------------------------------------------------

_BECH32_CHARSET: Final = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_DIGITS: Final = _digit_table(_BECH32_CHARSET)
# 5-bit values -> bech32 characters, for bytes.translate.
_BECH32_FROM_VALUES: Final = bytes.maketrans(bytes(range(32)), _BECH32_CHARSET.encode("ascii"))
# Same characters rewritten as base-32 digits for int(..., 32): turns 5-bit groups into one integer in C.
_BECH32_TO_BASE32: Final = str.maketrans(_BECH32_CHARSET, "0123456789abcdefghijklmnopqrstuv")
_BECH32_GENERATOR: Final = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _generator_xor(top: int, generator: tuple[int, ...] = _BECH32_GENERATOR) -> int:
    out = 0
    for i, gen in enumerate(generator):
        if (top >> i) & 1:
            out ^= gen
    return out


# One polymod step XORs in the generators selected by the 5 bits shifted out; precomputed for all 32 values.
_POLYMOD_TABLE: Final = tuple(_generator_xor(top) for top in range(32))
_BECH32_CONST: Final = 1  # BIP-173
_BECH32M_CONST: Final = 0x2BC830A3  # BIP-350
_BECH32_MAX_LENGTH: Final = 90  # BIP-173
# Every bech32 HRP we know, including test networks, so e.g. a testnet "tb1..." on "bitcoin" is reported as
# a wrong HRP rather than as bad Base58.
_KNOWN_BECH32_HRPS: Final = frozenset({"bc", "tb", "bcrt", "ltc", "tltc", "rltc", "bnb", "tbnb"})


def _polymod(state: int, values: bytes) -> int:
    table = _POLYMOD_TABLE
    for value in values:
        state = ((state & 0x1FFFFFF) << 5) ^ value ^ table[state >> 25]
    return state


def _hrp_state(hrp: str) -> int:
    """Polymod state after the HRP expansion (BIP-173 ``hrp_expand``); constant per network."""
    expanded = bytes([ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp])
    return _polymod(1, expanded)


def _hrp_state_of(net: Network, hrp: str) -> int:
    # The network's own HRP state is precomputed; Zcash has several HRPs (TEX, Sapling, unified).
    state = _HRP_STATES.get(net.name)
    return state if state is not None and _HRPS[net.name] == hrp else _hrp_state(hrp)


def _to_5bit(data: bytes) -> bytes:
    """8-bit bytes -> 5-bit groups, the last one zero-padded (BIP-173 ``convertbits(data, 8, 5, True)``)."""
    groups = (len(data) * 8 + 4) // 5
    value = int.from_bytes(data, "big") << (groups * 5 - len(data) * 8)
    return bytes((value >> (5 * i)) & 31 for i in range(groups - 1, -1, -1))


def _from_5bit(net: Network, address: str, data_part: str) -> bytes:
    """5-bit groups (as bech32 characters) -> bytes; BIP-173: at most 4 padding bits, all zero."""
    n_bits = len(data_part) * 5
    pad_bits = n_bits % 8
    value = int(data_part.translate(_BECH32_TO_BASE32), 32) if data_part else 0
    if pad_bits > 4:
        raise _invalid(net, address, AddressError.BAD_LENGTH, "its data part has a superfluous 5-bit group")
    if value & ((1 << pad_bits) - 1):
        raise _invalid(net, address, AddressError.BAD_ENCODING, "the padding bits of its data part are not zero")
    return (value >> pad_bits).to_bytes(n_bits // 8, "big")


def _bech32_encode(hrp: str, values: bytes, const: int) -> str:
    """hrp + "1" + data + checksum (BIP-173 with const 1, BIP-350 bech32m with its constant), lowercase."""
    checksum = _polymod(_hrp_state(hrp), values + bytes(6)) ^ const
    tail = bytes((checksum >> (5 * (5 - i))) & 31 for i in range(6))
    return f"{hrp}1{(values + tail).translate(_BECH32_FROM_VALUES).decode('ascii')}"


def _segwit_encode(hrp: str, version: int, program: bytes) -> str:
    # BIP-350: witness version 0 uses bech32, versions 1..16 bech32m.
    return _bech32_encode(hrp, bytes([version]) + _to_5bit(program), _BECH32_CONST if version == 0 else _BECH32M_CONST)


def _claims_segwit(net: Network, address: str) -> bool:
    sep = address.find("1")
    return sep > 0 and address[:sep].lower() in _KNOWN_BECH32_HRPS


def _bech32_decode(
    net: Network, address: str, hrp: str, min_values: int, *, max_length: int = _BECH32_MAX_LENGTH
) -> tuple[str, str, bytes, bool]:
    """BIP-173/BIP-350 string checks: (lowercase address, data part, 5-bit values, is bech32m)."""
    if len(address) > max_length:
        raise _invalid(net, address, AddressError.BAD_LENGTH, f"a bech32 address has at most {max_length} characters")
    lower = address.lower()
    # BIP-173: decoders must not accept strings mixing upper and lower case; all-uppercase is valid.
    if address != lower and address != address.upper():
        raise _invalid(net, address, AddressError.MIXED_CASE, "bech32 addresses must be all lowercase or all uppercase")
    sep = lower.rfind("1")  # the data part cannot contain '1', so the last '1' is the separator
    if lower[:sep] != hrp:
        if lower.startswith(f"{hrp}1"):
            raise _invalid(
                net, address, AddressError.BAD_CHARACTERS, "'1' is not a bech32 character after the separator"
            )
        raise _invalid(
            net,
            address,
            AddressError.BAD_HRP,
            f"the prefix {lower[:sep]!r} is not {net.title}'s {hrp!r} (another chain or a test network)",
        )
    data_part = lower[sep + 1 :]
    values = data_part.encode("ascii").translate(_BECH32_DIGITS)
    if _BAD_DIGIT in values:
        bad = data_part[values.index(_BAD_DIGIT)]
        raise _invalid(net, address, AddressError.BAD_CHARACTERS, f"{bad!r} is not a bech32 character")
    if len(values) < min_values:
        raise _invalid(net, address, AddressError.BAD_LENGTH, f"the data part is too short for a {net.title} address")
    residue = _polymod(_hrp_state_of(net, hrp), values)
    if residue == _BECH32_CONST:
        is_bech32m = False
    elif residue == _BECH32M_CONST:
        is_bech32m = True
    else:
        raise _invalid(net, address, AddressError.BAD_CHECKSUM, "the bech32 checksum does not match (typo?)")
    return lower, data_part, values, is_bech32m


def _parse_segwit(net: Network, address: str) -> NormalizedAddress:
    # At least a witness version, one program group and the 6-character checksum (program length rules below).
    lower, data_part, values, is_bech32m = _bech32_decode(net, address, _HRPS[net.name], 8)
    version = values[0]
    if version > 16:
        raise _invalid(net, address, AddressError.BAD_VERSION, f"witness version {version} does not exist (0..16)")
    # Program: 5-bit groups -> bytes. BIP-173: an incomplete final group must be at most 4 bits, all zero.
    groups = len(values) - 7
    n_bits = groups * 5
    pad_bits = n_bits % 8
    program_len = n_bits // 8
    program_int = int(data_part[1:-6].translate(_BECH32_TO_BASE32), 32)
    if pad_bits > 4 or program_int & ((1 << pad_bits) - 1):
        raise _invalid(net, address, AddressError.BAD_WITNESS_PROGRAM, "the witness program has invalid padding")
    # BIP-141/173: program 2..40 bytes; version 0 only 20 (P2WPKH) or 32 (P2WSH).
    if not 2 <= program_len <= 40 or (version == 0 and program_len not in (20, 32)):
        raise _invalid(
            net,
            address,
            AddressError.BAD_WITNESS_PROGRAM,
            f"a version {version} witness program cannot be {program_len} bytes",
        )
    # BIP-350: version 0 must use bech32, versions 1..16 must use bech32m.
    if is_bech32m != (version != 0):
        used, needed = ("bech32m", "bech32") if is_bech32m else ("bech32", "bech32m")
        raise _invalid(
            net,
            address,
            AddressError.BAD_CHECKSUM,
            f"witness version {version} requires a {needed} checksum but it has a {used} one (BIP-350)",
        )
    if version == 0:
        kind = "p2wpkh" if program_len == 20 else "p2wsh"
    elif version == 1 and program_len == 32:
        kind = "p2tr"  # BIP-341 taproot
    else:
        kind = "segwit"  # future witness versions / lengths: valid to send to, not yet defined
    program = (program_int >> pad_bits).to_bytes(program_len, "big")
    return NormalizedAddress(net.family, f"{net.family.value}:{lower}", lower, kind, program)


def _parse_bech32_account(net: Network, address: str) -> NormalizedAddress:
    # BNB Beacon Chain: plain BIP-173 bech32 (constant 1, no witness version) of the 20-byte account address,
    # HRP "bnb" on mainnet, "tbnb" on testnet (https://docs.bnbchain.org/bnb-beacon-chain/, "Address").
    # 20 bytes are exactly 32 five-bit groups, so there are no padding bits to check.
    hrp = _HRPS[net.name]
    sep = address.rfind("1")
    if sep <= 0 or not address[:sep].isalpha():
        raise _invalid(net, address, AddressError.BAD_FORMAT, f"a {net.title} address starts with {hrp + '1'!r}")
    lower, _data, values, is_bech32m = _bech32_decode(net, address, hrp, 7)
    if is_bech32m:
        raise _invalid(net, address, AddressError.BAD_CHECKSUM, "it has a bech32m checksum; these addresses use bech32")
    if len(values) != 32 + 6:
        raise _invalid(
            net, address, AddressError.BAD_LENGTH, f"expected a 20-byte account (38 characters after {hrp + '1'!r})"
        )
    return NormalizedAddress(net.family, f"{net.family.value}:{lower}", lower, "bnb")


# --------------------------------------------------------------------------------------------------------
# CashAddr (Bitcoin Cash) and the legacy form
# --------------------------------------------------------------------------------------------------------

# Spec: https://github.com/bitcoincashorg/bitcoincash.org/blob/master/spec/cashaddr.md ("CashAddr"), with the
# CashTokens (CHIP-2022-02) token-aware types and P2SH32 (CHIP-2022-05) of the May 2023 upgrade.
_CASHADDR_PREFIX: Final = "bitcoincash"
# Prefixes of other networks and chains that reuse CashAddr, for a clear "wrong prefix" message.
_CASHADDR_OTHER_PREFIXES: Final = {
    "bchtest": "a Bitcoin Cash testnet address",
    "bchreg": "a Bitcoin Cash regtest address",
    "ecash": "an eCash (XEC) address",
    "ectest": "an eCash testnet address",
    "simpleledger": "an SLP token address",
}
# CashAddr's 40-bit BCH code (spec, "Checksum"): generators for the 5 bits shifted out of the 40-bit state.
_CASHADDR_GENERATOR: Final = (0x98F2BC8E61, 0x79B76D99E2, 0xF33E5FB3C4, 0xAE2EABE2A8, 0x1E4F43E470)
_CASHADDR_TABLE: Final = tuple(_generator_xor(top, _CASHADDR_GENERATOR) for top in range(32))
# Size bits (low 3 bits of the version byte) -> hash length in bytes (spec, "Size bits" table).
_CASHADDR_HASH_SIZES: Final = (20, 24, 28, 32, 40, 48, 56, 64)
# (type bits, hash length) -> kind, for the payment types in use. Types 2 and 3 are the token-aware forms of
# 0 (P2PKH) and 1 (P2SH) (CashTokens, "Token-Aware CashAddresses"): the same locking script, so the same key.
_CASHADDR_KINDS: Final = {
    (0, 20): "p2pkh",
    (1, 20): "p2sh",
    (1, 32): "p2sh32",
    (2, 20): "p2pkh-tokens",
    (3, 20): "p2sh-tokens",
    (3, 32): "p2sh32-tokens",
}
# Legacy Base58Check kind -> CashAddr version byte (type bits << 3, size bits 0 = 160-bit hash).
_LEGACY_TO_CASHADDR_VERSION: Final = {"p2pkh": 0x00, "p2sh": 0x08}


def _cashaddr_polymod(state: int, values: bytes) -> int:
    # spec PolyMod, with the 5-bit step precomputed; the spec's final "^ 1" is left to the callers:
    # a valid address leaves the state at exactly 1.
    table = _CASHADDR_TABLE
    for value in values:
        state = ((state & 0x07FFFFFFFF) << 5) ^ value ^ table[state >> 35]
    return state


def _cashaddr_prefix_state(prefix: str) -> int:
    # spec: the checksum covers the lower 5 bits of each prefix character, then a zero for the separator.
    return _cashaddr_polymod(1, bytes([ord(c) & 31 for c in prefix] + [0]))


_CASHADDR_PREFIX_STATE: Final = _cashaddr_prefix_state(_CASHADDR_PREFIX)
_CASHADDR_TEST_PREFIX_STATES: Final = {p: _cashaddr_prefix_state(p) for p in ("bchtest", "bchreg")}


def _cashaddr_encode(version: int, hash_bytes: bytes) -> str:
    """Lowercase CashAddr payload (no prefix) of a version byte and hash, with its checksum."""
    # spec: the data is padded to the right with zero bits to complete the last 5-bit group.
    values = _to_5bit(bytes([version]) + hash_bytes)
    checksum = _cashaddr_polymod(_CASHADDR_PREFIX_STATE, values + bytes(8)) ^ 1
    values += bytes((checksum >> (5 * i)) & 31 for i in range(7, -1, -1))
    return values.translate(_BECH32_FROM_VALUES).decode("ascii")


def _claims_cashaddr(net: Network, address: str) -> bool:
    # A CashAddr payload uses the bech32 alphabet and has 42+ characters for a 160-bit hash, optionally behind
    # a prefix and ':' (and starts with 'q', 'p', 'z' or 'r' unless mistyped). A legacy Base58 address has at
    # most 34 characters, so claiming these never hides a valid legacy address (which is tried after anyway).
    if ":" in address:
        return True
    return len(address) > 34 and _BAD_DIGIT not in address.lower().encode("ascii").translate(_BECH32_DIGITS)


def _cashaddr_checked(net: Network, address: str) -> tuple[str, bytes]:
    """Case, prefix, alphabet and checksum checks: (lowercase payload without prefix, its 5-bit values)."""
    lower = address.lower()
    # spec, "Uppercase/lowercase": uppercase is accepted, a mixture must be rejected (prefix included).
    if address != lower and address != address.upper():
        raise _invalid(
            net, address, AddressError.MIXED_CASE, "CashAddr addresses must be all lowercase or all uppercase"
        )
    colon = lower.find(":")
    payload = lower[colon + 1 :]  # the whole string when there is no prefix
    if colon >= 0 and lower[:colon] != _CASHADDR_PREFIX:
        prefix = lower[:colon]
        what = _CASHADDR_OTHER_PREFIXES.get(prefix, "another network's address")
        raise _invalid(net, address, AddressError.BAD_HRP, f"the prefix {prefix!r} is not 'bitcoincash:' ({what})")
    values = payload.encode("ascii").translate(_BECH32_DIGITS)
    if _BAD_DIGIT in values:
        bad = payload[values.index(_BAD_DIGIT)]
        raise _invalid(net, address, AddressError.BAD_CHARACTERS, f"{bad!r} is not a CashAddr character")
    if len(values) < 8 + 2:  # the checksum and at least the version byte
        raise _invalid(net, address, AddressError.BAD_LENGTH, "it is too short for a CashAddr address")
    # spec: "When presented to users, the prefix may be omitted as it is part of the checksum computation",
    # so an unprefixed payload is checked as a "bitcoincash:" one.
    if _cashaddr_polymod(_CASHADDR_PREFIX_STATE, values) != 1:
        if colon < 0:
            for prefix, state in _CASHADDR_TEST_PREFIX_STATES.items():
                if _cashaddr_polymod(state, values) == 1:
                    raise _invalid(net, address, AddressError.BAD_HRP, f"it is a {prefix!r} (test network) address")
        raise _invalid(net, address, AddressError.BAD_CHECKSUM, "the CashAddr checksum does not match (typo?)")
    return payload, values


def _parse_cashaddr(net: Network, address: str) -> NormalizedAddress:
    payload, values = _cashaddr_checked(net, address)
    groups = len(values) - 8
    n_bits = groups * 5
    pad_bits = n_bits % 8
    data_int = int(payload[:groups].translate(_BECH32_TO_BASE32), 32)
    if pad_bits > 4:
        raise _invalid(net, address, AddressError.BAD_LENGTH, "its payload has a superfluous 5-bit group")
    # Only the zero-padded spelling is canonical (the reference decoder rejects non-zero padding), which keeps
    # one string per address and thus the payload usable as the key.
    if data_int & ((1 << pad_bits) - 1):
        raise _invalid(net, address, AddressError.BAD_ENCODING, "the padding bits of its payload are not zero")
    data = (data_int >> pad_bits).to_bytes(n_bits // 8, "big")
    version = data[0]
    # spec, "Type byte": the most significant bit is reserved and must be 0, the next 4 bits are the type,
    # the low 3 bits the hash size.
    if version & 0x80:
        raise _invalid(net, address, AddressError.BAD_VERSION, "the reserved bit of its version byte is set")
    type_bits, hash_len = version >> 3, _CASHADDR_HASH_SIZES[version & 7]
    if len(data) - 1 != hash_len:
        raise _invalid(
            net,
            address,
            AddressError.BAD_LENGTH,
            f"its version byte announces a {hash_len}-byte hash, not {len(data) - 1}",
        )
    kind = _CASHADDR_KINDS.get((type_bits, hash_len))
    if kind is None:
        raise _invalid(
            net,
            address,
            AddressError.BAD_VERSION,
            f"type {type_bits} with a {hash_len * 8}-bit hash is not a Bitcoin Cash payment address",
        )
    # Token-aware types pay the same locking script as their plain type: key them by the plain form.
    canonical = payload if type_bits < 2 else _cashaddr_encode(version - (2 << 3), data[1:])
    display = f"{_CASHADDR_PREFIX}:{payload}"
    return NormalizedAddress(net.family, f"{net.family.value}:{canonical}", display, kind, data[1:])


def _parse_bch_legacy(net: Network, address: str) -> NormalizedAddress:
    # A legacy (Base58Check, version 0x00/0x05) Bitcoin Cash address and the CashAddr of the same type and hash
    # are one address (spec, "Examples of address translation"): key and display are the CashAddr form.
    payload, kind = _b58check_versioned(net, address)
    canonical = _cashaddr_encode(_LEGACY_TO_CASHADDR_VERSION[kind], payload[1:])
    display = f"{_CASHADDR_PREFIX}:{canonical}"
    return NormalizedAddress(net.family, f"{net.family.value}:{canonical}", display, kind, payload[1:])


# --------------------------------------------------------------------------------------------------------
# Monero
# --------------------------------------------------------------------------------------------------------

# Monero's Base58 (src/common/base58.cpp in monero-project/monero): the Bitcoin alphabet applied to 8-byte
# blocks, each always written as 11 characters (leading '1's included), the last, shorter block as
# _XMR_ENCODED_SIZES[n] characters for n bytes. Fixed-width blocks make the string <-> bytes mapping one-to-one
# (a block whose value does not fit its byte count is invalid), so the exact string is a canonical key.
_XMR_BLOCK_BYTES: Final = 8
_XMR_BLOCK_CHARS: Final = 11
_XMR_ENCODED_SIZES: Final = (0, 2, 3, 5, 6, 7, 9, 10, 11)
_XMR_DECODED_SIZES: Final = {chars: size for size, chars in enumerate(_XMR_ENCODED_SIZES)}
# Address = varint network tag + public spend key (32) + public view key (32) [+ payment ID (8) for an
# integrated address] + first 4 bytes of Keccak-256 of all that (src/cryptonote_config.h, mainnet tags).
_XMR_TAGS: Final = {18: ("standard", 69), 19: ("integrated", 77), 42: ("subaddress", 69)}
_XMR_OTHER_TAGS: Final = {53: "testnet", 54: "testnet", 63: "testnet", 24: "stagenet", 25: "stagenet", 36: "stagenet"}
_XMR_STANDARD_TAG: Final = 18


def _keccak4(data: bytes) -> bytes:
    # Keccak-256 with the original padding (not hashlib's SHA3-256), first 4 bytes.
    return keccak.new(digest_bits=256, data=data).digest()[:4]


def _monero_b58_encode(raw: bytes) -> str:
    out: list[str] = []
    for start in range(0, len(raw), _XMR_BLOCK_BYTES):
        block = raw[start : start + _XMR_BLOCK_BYTES]
        value = int.from_bytes(block, "big")
        chars = ["1"] * _XMR_ENCODED_SIZES[len(block)]
        for i in range(len(chars) - 1, -1, -1):
            value, digit = divmod(value, 58)
            chars[i] = _B58_ALPHABET[digit]
        out.extend(chars)
    return "".join(out)


def _parse_monero(net: Network, address: str) -> NormalizedAddress:
    digits = address.encode("ascii").translate(_B58_DIGITS)
    if _BAD_DIGIT in digits:
        bad = address[digits.index(_BAD_DIGIT)]
        raise _invalid(net, address, AddressError.BAD_CHARACTERS, f"{bad!r} is not a Base58 character")
    # 69 bytes (standard, subaddress) = 8 blocks + 5 bytes -> 95 characters; 77 bytes (integrated) -> 106.
    if len(address) not in (95, 106):
        raise _invalid(
            net, address, AddressError.BAD_LENGTH, f"a Monero address has 95 or 106 characters, not {len(address)}"
        )
    blocks: list[bytes] = []
    for start in range(0, len(digits), _XMR_BLOCK_CHARS):
        block = digits[start : start + _XMR_BLOCK_CHARS]
        size = _XMR_DECODED_SIZES[len(block)]  # 95 and 106 leave a valid last block (7 and 7 characters)
        value = 0
        for digit in block:
            value = value * 58 + digit
        if value >> (8 * size):
            raise _invalid(net, address, AddressError.BAD_ENCODING, "a Base58 block overflows its byte count")
        blocks.append(value.to_bytes(size, "big"))
    raw = b"".join(blocks)
    if _keccak4(raw[:-4]) != raw[-4:]:
        raise _invalid(net, address, AddressError.BAD_CHECKSUM, "the Keccak-256 checksum does not match (typo?)")
    tag = raw[0]
    known = _XMR_TAGS.get(tag)
    if known is None:
        other = _XMR_OTHER_TAGS.get(tag)
        detail = f"it is a {other} address" if other else f"network tag {tag} is not a Monero mainnet address"
        raise _invalid(net, address, AddressError.BAD_VERSION, detail)
    kind, size = known
    if len(raw) != size:
        raise _invalid(net, address, AddressError.BAD_LENGTH, f"a {kind} address has {size} bytes, not {len(raw)}")
    if kind != "integrated":
        return NormalizedAddress(net.family, f"{net.family.value}:{address}", address, kind)
    # An integrated address is the standard address (same spend and view keys) plus a payment ID that only
    # tells the recipient who paid: the funds reach the standard address's wallet, so it is keyed by that.
    standard = bytes([_XMR_STANDARD_TAG]) + raw[1:65]
    canonical = _monero_b58_encode(standard + _keccak4(standard))
    return NormalizedAddress(net.family, f"{net.family.value}:{canonical}", address, kind)


# --------------------------------------------------------------------------------------------------------
# Stellar StrKey (SEP-23)
# --------------------------------------------------------------------------------------------------------

# https://github.com/stellar/stellar-protocol/blob/master/ecosystem/sep-0023.md: version byte + key (+ 8-byte
# big-endian id for muxed accounts) + CRC16-XModem little-endian, RFC 4648 base32 without padding, uppercase.
# "a strkey is only valid if re-encoding the binary key yields the exact same strkey", so the exact string is
# canonical: lowercase, padding characters and non-zero unused trailing bits are rejected.
_STRKEY_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_STRKEY_DIGITS: Final = _digit_table(_STRKEY_ALPHABET)
_STRKEY_TO_BASE32: Final = str.maketrans(_STRKEY_ALPHABET, "0123456789abcdefghijklmnopqrstuv")
_STRKEY_ACCOUNT: Final = 6 << 3  # "G...", ed25519 public key (algorithm bits 0)
_STRKEY_MUXED: Final = 12 << 3  # "M...", ed25519 public key + 64-bit id
# Other strkey types, so a pasted secret seed or contract id gets a clear message.
_STRKEY_OTHER: Final = {
    18 << 3: "a secret seed (a private key!), not an account",
    19 << 3: "a pre-authorized transaction hash",
    23 << 3: "a hash-x signer",
    15 << 3: "a signed-payload signer",
    2 << 3: "a contract id",
    11 << 3: "a liquidity pool id",
    1 << 3: "a claimable balance id",
}


def _strkey_crc(data: bytes) -> bytes:
    # CRC16-XModem (polynomial 0x1021, initial value 0), which is binascii.crc_hqx with 0; little-endian.
    return binascii.crc_hqx(data, 0).to_bytes(2, "little")


def _parse_stellar(net: Network, address: str) -> NormalizedAddress:
    values = address.encode("ascii").translate(_STRKEY_DIGITS)
    if _BAD_DIGIT in values:
        bad = address[values.index(_BAD_DIGIT)]
        hint = " (Stellar addresses are uppercase)" if bad.upper() in _STRKEY_ALPHABET else ""
        raise _invalid(net, address, AddressError.BAD_CHARACTERS, f"{bad!r} is not a StrKey (base32) character{hint}")
    # 35 bytes (G) -> 56 characters; 43 bytes (M) -> 69 characters.
    if len(address) not in (56, 69):
        raise _invalid(
            net,
            address,
            AddressError.BAD_LENGTH,
            f"a Stellar address has 56 (G...) or 69 (M...) characters, not {len(address)}",
        )
    n_bits = len(address) * 5
    pad_bits = n_bits % 8
    value = int(address.translate(_STRKEY_TO_BASE32), 32)
    if value & ((1 << pad_bits) - 1):
        raise _invalid(
            net, address, AddressError.BAD_ENCODING, "the unused trailing bits of its last character are not zero"
        )
    raw = (value >> pad_bits).to_bytes(n_bits // 8, "big")
    if _strkey_crc(raw[:-2]) != raw[-2:]:
        raise _invalid(net, address, AddressError.BAD_CHECKSUM, "the StrKey checksum does not match (typo?)")
    version = raw[0]
    base, algorithm = version & 0xF8, version & 0x07  # SEP-23: key type in the top 5 bits, algorithm below
    if version == _STRKEY_ACCOUNT and len(raw) == 35:
        return NormalizedAddress(net.family, f"{net.family.value}:{address}", address, "account")
    if version == _STRKEY_MUXED and len(raw) == 43:
        # A muxed account is the G account plus an id that only tells the recipient who paid (CAP-27):
        # the funds reach the G account, so it is keyed by that.
        account = bytes([_STRKEY_ACCOUNT]) + raw[1:33]
        canonical = base64.b32encode(account + _strkey_crc(account)).decode("ascii")
        return NormalizedAddress(net.family, f"{net.family.value}:{canonical}", address, "muxed")
    if base in (_STRKEY_ACCOUNT, _STRKEY_MUXED):
        if algorithm:
            raise _invalid(net, address, AddressError.BAD_VERSION, f"key algorithm {algorithm} is not ed25519 (0)")
        raise _invalid(net, address, AddressError.BAD_LENGTH, "its length does not match its StrKey type")
    what = _STRKEY_OTHER.get(base, "not an account")
    raise _invalid(net, address, AddressError.BAD_VERSION, f"version byte 0x{version:02x}: {what}")


# --------------------------------------------------------------------------------------------------------
# Zcash: TEX (ZIP-320), Sapling, unified addresses (ZIP-316)
# --------------------------------------------------------------------------------------------------------

# ZIP-320: a TEX address is bech32m, HRP "tex", of the 20-byte P2PKH hash; funds sent to it reach the t1 address
# of the same hash (only from transparent inputs), so it is keyed by that t1 address.
_ZCASH_TEX_HRP: Final = "tex"
# Sapling payment address: bech32 (BIP-173, not bech32m), HRP "zs", 11-byte diversifier + 32-byte pk_d. Longer
# than 90 characters is allowed by no Zcash spec, so the BIP-173 limit applies.
_ZCASH_SAPLING_HRP: Final = "zs"
_ZCASH_RECEIVER_BYTES: Final = 43
# ZIP-316 unified addresses: "u" (revisions 0/1), and the revision 2 forms of the zcash-test-vectors suite: "tu"
# (may carry a transparent receiver) and "zu" (shielded receivers only).
_ZCASH_UA_HRP: Final = "u"
_ZCASH_UA_HRPS: Final = frozenset({"u", "tu", "zu"})
_ZCASH_NOT_ADDRESSES: Final = {
    "utest": "a testnet unified address",
    "uregtest": "a regtest unified address",
    "textest": "a testnet TEX address",
    "ztestsapling": "a testnet Sapling address",
    "zregtestsapling": "a regtest Sapling address",
    "uview": "a unified full viewing key, not an address",
    "uviewtest": "a testnet unified full viewing key, not an address",
    "uivk": "a unified incoming viewing key, not an address",
    "uivktest": "a testnet unified incoming viewing key, not an address",
    "zxviews": "a Sapling extended full viewing key, not an address",
    "zivks": "a Sapling incoming viewing key, not an address",
}
_ZCASH_CLAIMED_HRPS: Final = frozenset({_ZCASH_TEX_HRP, _ZCASH_SAPLING_HRP, *_ZCASH_UA_HRPS, *_ZCASH_NOT_ADDRESSES})
# ZIP-316 item typecodes and their fixed lengths; metadata typecodes are 0xC0..0xFC, of which 0xE0..0xFC are
# "MUST understand" (a decoder that does not know one must reject the address). Revision 2 defines the
# expiry height (0xE0, 4 bytes) and expiry time (0xE1, 8 bytes); they do not change where funds go.
_UA_P2PKH: Final = 0x00
_UA_P2SH: Final = 0x01
_UA_SAPLING: Final = 0x02
_UA_ORCHARD: Final = 0x03
_UA_LENGTHS: Final = {_UA_P2PKH: 20, _UA_P2SH: 20, _UA_SAPLING: 43, _UA_ORCHARD: 43, 0xE0: 4, 0xE1: 8}
_UA_METADATA: Final = range(0xC0, 0xFD)
_UA_MUST_UNDERSTAND: Final = range(0xE0, 0xFD)
_UA_KNOWN_R2_METADATA: Final = frozenset({0xE0, 0xE1})
_UA_PADDING_BYTES: Final = 16
_UA_MIN_BYTES: Final = 48  # F4Jumble's minimum message length (ZIP-316)
_ZCASH_VERSION_P2PKH: Final = b"\x1c\xb8"
_ZCASH_VERSION_P2SH: Final = b"\x1c\xbd"
# F4Jumble (ZIP-316, "Jumbling"): a 4-round Feistel network over BLAKE2b with these personalizations.
_F4_HASH_BYTES: Final = 64
_F4_H_PERSONAL: Final = b"UA_F4Jumble_H"
_F4_G_PERSONAL: Final = b"UA_F4Jumble_G"


def _xor(left: bytes, right: bytes) -> bytes:
    return (int.from_bytes(left, "big") ^ int.from_bytes(right, "big")).to_bytes(len(left), "big")


def _f4_h(round_index: int, data: bytes, size: int) -> bytes:
    person = _F4_H_PERSONAL + bytes([round_index, 0, 0])
    return hashlib.blake2b(data, digest_size=size, person=person).digest()


def _f4_g(round_index: int, data: bytes, size: int) -> bytes:
    blocks = (size + _F4_HASH_BYTES - 1) // _F4_HASH_BYTES
    return b"".join(
        hashlib.blake2b(
            data, digest_size=_F4_HASH_BYTES, person=_F4_G_PERSONAL + bytes([round_index]) + j.to_bytes(2, "little")
        ).digest()
        for j in range(blocks)
    )[:size]


def f4jumble(message: bytes) -> bytes:
    """ZIP-316 F4Jumble of ``message`` (at least 48 bytes)."""
    left_len = min(_F4_HASH_BYTES, len(message) // 2)
    a, b = message[:left_len], message[left_len:]
    x = _xor(b, _f4_g(0, a, len(b)))
    y = _xor(a, _f4_h(0, x, left_len))
    d = _xor(x, _f4_g(1, y, len(x)))
    c = _xor(y, _f4_h(1, d, left_len))
    return c + d


def f4jumble_inv(message: bytes) -> bytes:
    """The inverse of :func:`f4jumble`."""
    left_len = min(_F4_HASH_BYTES, len(message) // 2)
    c, d = message[:left_len], message[left_len:]
    y = _xor(c, _f4_h(1, d, left_len))
    x = _xor(d, _f4_g(1, y, len(d)))
    a = _xor(y, _f4_h(0, x, left_len))
    b = _xor(x, _f4_g(0, a, len(x)))
    return a + b


def _ua_padding(hrp: str) -> bytes:
    return hrp.encode("ascii").ljust(_UA_PADDING_BYTES, b"\0")


def _compact_size(data: bytes, pos: int) -> tuple[int, int] | None:
    """Zcash CompactSize at ``pos``: (value, next position), or None when truncated or not minimally encoded."""
    if pos >= len(data):
        return None
    first = data[pos]
    if first < 0xFD:
        return first, pos + 1
    width, minimum = {0xFD: (2, 0xFD), 0xFE: (4, 0x10000), 0xFF: (8, 0x100000000)}[first]
    end = pos + 1 + width
    if end > len(data):
        return None
    value = int.from_bytes(data[pos + 1 : end], "little")
    return (value, end) if value >= minimum else None


def encode_unified_address(items: dict[int, bytes], hrp: str = _ZCASH_UA_HRP) -> str:
    """ZIP-316 encoding of typecode -> raw item (the inverse of what :func:`normalize` decodes)."""
    # Every typecode and length used here is below 0xFD, so each CompactSize is a single byte.
    if any(typecode >= 0xFD or len(item) >= 0xFD for typecode, item in items.items()):
        raise ValueError("typecodes and item lengths must be below 0xFD")
    raw = b"".join(bytes([typecode, len(item)]) + item for typecode, item in sorted(items.items()))
    raw += _ua_padding(hrp)
    return _bech32_encode(hrp, _to_5bit(f4jumble(raw)), _BECH32M_CONST)


def _zcash_receiver(typecode: int, item: bytes) -> NormalizedAddress:
    """One receiver as an address of its own: t1/t3, a Sapling zs1 address, an Orchard-only unified address."""
    if typecode in (_UA_P2PKH, _UA_P2SH):
        kind, version = ("p2pkh", _ZCASH_VERSION_P2PKH) if typecode == _UA_P2PKH else ("p2sh", _ZCASH_VERSION_P2SH)
        spelled = _b58check_encode(version + item)
    elif typecode == _UA_SAPLING:
        kind, spelled = "sapling", _bech32_encode(_ZCASH_SAPLING_HRP, _to_5bit(item), _BECH32_CONST)
    else:
        # Orchard receivers have no encoding of their own: the unified address holding only that receiver is it.
        kind, spelled = "orchard", encode_unified_address({_UA_ORCHARD: item})
    return NormalizedAddress(ChainFamily.ZCASH, f"zec:{spelled}", spelled, kind, item)


def _parse_unified(net: Network, address: str, hrp: str) -> NormalizedAddress:
    limit = net.max_length or MAX_ADDRESS_LENGTH
    lower, data_part, _values, is_bech32m = _bech32_decode(net, address, hrp, 8, max_length=limit)
    if not is_bech32m:
        raise _invalid(
            net, address, AddressError.BAD_CHECKSUM, "it has a bech32 checksum; unified addresses use bech32m"
        )
    raw = _from_5bit(net, address, data_part[:-6])
    if len(raw) < _UA_MIN_BYTES:
        raise _invalid(
            net, address, AddressError.BAD_LENGTH, f"it decodes to {len(raw)} bytes, a unified address has 48 or more"
        )
    decoded = f4jumble_inv(raw)
    if decoded[-_UA_PADDING_BYTES:] != _ua_padding(hrp):
        raise _invalid(
            net, address, AddressError.BAD_ENCODING, "its unjumbled padding does not match (not a unified address)"
        )
    items: dict[int, bytes] = {}
    body = decoded[:-_UA_PADDING_BYTES]
    pos = 0
    previous = -1
    while pos < len(body):
        typecode_at = _compact_size(body, pos)
        length_at = _compact_size(body, typecode_at[1]) if typecode_at else None
        if typecode_at is None or length_at is None or length_at[1] + length_at[0] > len(body):
            raise _invalid(net, address, AddressError.BAD_ENCODING, "its items are truncated or not minimally encoded")
        typecode, (length, start) = typecode_at[0], length_at
        expected = _UA_LENGTHS.get(typecode)
        if expected is not None and length != expected:
            raise _invalid(
                net, address, AddressError.BAD_ENCODING, f"item type {typecode:#x} has {length} bytes, not {expected}"
            )
        if typecode <= previous:
            raise _invalid(net, address, AddressError.BAD_ENCODING, "its items are not in ascending typecode order")
        if typecode in _UA_MUST_UNDERSTAND and (hrp == _ZCASH_UA_HRP or typecode not in _UA_KNOWN_R2_METADATA):
            raise _invalid(
                net, address, AddressError.BAD_VERSION, f"it carries metadata {typecode:#x} that must be understood"
            )
        items[typecode] = body[start : start + length]
        previous = typecode
        pos = start + length
    if _UA_P2PKH in items and _UA_P2SH in items:
        raise _invalid(net, address, AddressError.BAD_ENCODING, "it has both a P2PKH and a P2SH receiver")
    if hrp == "zu" and (_UA_P2PKH in items or _UA_P2SH in items):
        raise _invalid(
            net, address, AddressError.BAD_ENCODING, "a shielded-only unified address has a transparent receiver"
        )
    if not any(typecode not in _UA_METADATA for typecode in items):
        raise _invalid(net, address, AddressError.BAD_ENCODING, "it has no receiver")
    receivers = tuple(
        _zcash_receiver(typecode, item)
        for typecode, item in items.items()
        if typecode in (_UA_P2PKH, _UA_P2SH, _UA_SAPLING, _UA_ORCHARD)
    )
    # Unknown receiver types (future pools) cannot be screened: nothing can be listed under them yet.
    return NormalizedAddress(net.family, f"{net.family.value}:{lower}", lower, "unified", b"", receivers)


def _claims_zcash_bech32(net: Network, address: str) -> bool:
    # The HRPs have no '1', so in a valid string the first '1' is the separator; a t-address ("t1...") has the
    # HRP-like prefix "t", which is none of these.
    first = address.find("1")
    return first > 0 and address[:first].lower() in _ZCASH_CLAIMED_HRPS


def _parse_zcash_bech32(net: Network, address: str) -> NormalizedAddress:
    hrp = address[: address.find("1")].lower()
    other = _ZCASH_NOT_ADDRESSES.get(hrp)
    if other is not None:
        reason = AddressError.BAD_HRP if "test" in hrp else AddressError.BAD_VERSION
        raise _invalid(net, address, reason, f"it is {other}")
    if hrp in _ZCASH_UA_HRPS:
        return _parse_unified(net, address, hrp)
    lower, data_part, _values, is_bech32m = _bech32_decode(net, address, hrp, 7)
    raw = _from_5bit(net, address, data_part[:-6])
    if hrp == _ZCASH_TEX_HRP:
        if not is_bech32m:
            raise _invalid(
                net, address, AddressError.BAD_CHECKSUM, "it has a bech32 checksum; TEX addresses use bech32m"
            )
        if len(raw) != 20:
            raise _invalid(
                net, address, AddressError.BAD_LENGTH, f"a TEX address holds a 20-byte hash, not {len(raw)} bytes"
            )
        t_address = _b58check_encode(_ZCASH_VERSION_P2PKH + raw)
        return NormalizedAddress(net.family, f"{net.family.value}:{t_address}", lower, "tex", raw)
    if is_bech32m:
        raise _invalid(
            net, address, AddressError.BAD_CHECKSUM, "it has a bech32m checksum; Sapling addresses use bech32"
        )
    if len(raw) != _ZCASH_RECEIVER_BYTES:
        raise _invalid(net, address, AddressError.BAD_LENGTH, f"a Sapling address holds 43 bytes, not {len(raw)}")
    return NormalizedAddress(net.family, f"{net.family.value}:{lower}", lower, "sapling", raw)


# --------------------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------------------

_Claims = Callable[[Network, str], bool]
_Parse = Callable[[Network, str], NormalizedAddress]

_FORMATS: Final[dict[AddressFormat, tuple[_Claims, _Parse]]] = {
    AddressFormat.EVM_HEX: (_claims_any, _parse_evm),
    AddressFormat.BASE58CHECK: (_claims_any, _parse_base58check),
    AddressFormat.SEGWIT: (_claims_segwit, _parse_segwit),
    AddressFormat.CASHADDR: (_claims_cashaddr, _parse_cashaddr),
    AddressFormat.BCH_LEGACY: (_claims_any, _parse_bch_legacy),
    AddressFormat.TRON_HEX: (_claims_tron_hex, _parse_tron_hex),
    AddressFormat.BECH32: (_claims_any, _parse_bech32_account),
    AddressFormat.XRP_BASE58: (_claims_any, _parse_xrp),
    AddressFormat.MONERO_BASE58: (_claims_any, _parse_monero),
    AddressFormat.SOLANA_BASE58: (_claims_any, _parse_solana),
    AddressFormat.STRKEY: (_claims_any, _parse_stellar),
    AddressFormat.ZCASH_BECH32: (_claims_zcash_bech32, _parse_zcash_bech32),
}


class _Entry:
    """A network with its parsers resolved once, so normalize() is two dict lookups and a call."""

    __slots__ = ("guarded", "last", "network")

    def __init__(self, network: Network) -> None:
        self.network = network
        parsers = tuple(_FORMATS[f] for f in network.formats)
        # Every network ends with a format that claims everything; the ones before it only claim their shape.
        if parsers[-1][0] is not _claims_any:
            raise RuntimeError(f"{network.name}: the last address format must accept any string")
        self.guarded: tuple[tuple[_Claims, _Parse], ...] = parsers[:-1]
        self.last: _Parse = parsers[-1][1]

    def parse(self, address: str) -> NormalizedAddress:
        net = self.network
        guarded = self.guarded
        if not guarded:
            return self.last(net, address)
        # Several formats: the first one that claims the string decides its error, but a later format still
        # gets a chance, so a claim that is only a lookalike (a Base58 string beginning "LTC1...") cannot
        # make a valid address invalid. Only invalid input pays for the exceptions.
        first_error: InvalidAddress | None = None
        for claims, parse in guarded:
            if claims(net, address):
                try:
                    return parse(net, address)
                except InvalidAddress as exc:
                    if first_error is None:
                        first_error = exc
        if first_error is None:
            return self.last(net, address)
        try:
            return self.last(net, address)
        except InvalidAddress:
            pass
        raise first_error


def _fold(name: str) -> str:
    return name.lower().replace("_", "-").replace(" ", "-")


def _build_lookup() -> dict[str, _Entry]:
    lookup: dict[str, _Entry] = {}
    for net in _NETWORK_TABLE:
        entry = _Entry(net)
        for name in (net.name, *net.aliases):
            key = _fold(name)
            if key in lookup:
                raise RuntimeError(f"network name {key!r} is defined twice")
            lookup[key] = entry
    return lookup


_LOOKUP: Final = _build_lookup()


def _b58_params(net: Network) -> tuple[dict[bytes, str], int, int, dict[str, bytes]]:
    """(version -> kind, version length, decoded length = version + 20-byte hash + 4-byte checksum,
    kind -> its current version: the first listed, which keys every version of that kind)."""
    versions = dict(net.base58_versions)
    lengths = {len(v) for v in versions}
    if len(lengths) != 1:
        raise RuntimeError(f"{net.name}: Base58 versions must all have the same length")
    version_len = lengths.pop()
    canonical: dict[str, bytes] = {}
    for version, kind in net.base58_versions:
        canonical.setdefault(kind, version)
    return versions, version_len, version_len + 20 + 4, canonical


_B58_PARAMS: Final = {n.name: _b58_params(n) for n in _NETWORK_TABLE if n.base58_versions}
# Network name -> its bech32 HRP (segwit or plain; a network has at most one) and the polymod state after it.
_HRPS: Final[dict[str, str]] = {
    n.name: hrp for n in _NETWORK_TABLE if (hrp := n.segwit_hrp or n.bech32_hrp) is not None
}
_HRP_STATES: Final[dict[str, int]] = {name: _hrp_state(hrp) for name, hrp in _HRPS.items()}
_KNOWN_NETWORKS: Final = tuple(n.name for n in _NETWORK_TABLE)


def _entry(network: str) -> _Entry:
    entry = _LOOKUP.get(network)
    if entry is None:
        entry = _LOOKUP.get(_fold(network))
        if entry is None:
            raise UnsupportedNetwork(network)
    return entry


def _precheck(net: Network, address: str) -> None:
    """Generic rejections, before any format-specific work. Input is never repaired."""
    if not address:
        raise _invalid(net, address, AddressError.EMPTY, "the address is empty")
    limit = net.max_length or MAX_ADDRESS_LENGTH
    if len(address) > limit:
        raise _invalid(net, address, AddressError.TOO_LONG, f"it is longer than {limit} characters")
    # Same definition of whitespace as str.strip(), but O(1): the screener must not silently strip input.
    if address[0].isspace() or address[-1].isspace():
        raise _invalid(net, address, AddressError.WHITESPACE, "it has leading or trailing whitespace")
    # Every supported format is printable ASCII; control characters (NUL, ESC, DEL...) never belong to one.
    if not (address.isascii() and address.isprintable()):
        raise _invalid(net, address, AddressError.BAD_CHARACTERS, "it contains non-ASCII or control characters")


# --------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------


def resolve_network(network: str) -> Network:
    """The network named ``network`` (case-insensitive; aliases such as "eth", "bep20", "trc20")."""
    return _entry(network).network


def known_networks() -> tuple[str, ...]:
    """Canonical names of every supported network."""
    return _KNOWN_NETWORKS


def normalize(network: str, address: str) -> NormalizedAddress:
    """Validate ``address`` for ``network`` and return its lookup key and display form.

    Raises :class:`UnsupportedNetwork` for an unknown network and :class:`InvalidAddress` otherwise.
    """
    entry = _entry(network)
    _precheck(entry.network, address)
    return entry.parse(address)


def normalize_key(network: str, address: str) -> str:
    """``normalize(network, address).key`` without building the display form.

    Same validation, same errors; for EVM it skips the Keccak-256 hash that the EIP-55 display of an
    all-lowercase or all-uppercase input needs, which is most of the cost of that path.
    """
    entry = _entry(network)
    net = entry.network
    _precheck(net, address)
    if net.formats == _EVM:
        return "evm:0x" + _evm_lower_body(net, address)[0]
    return entry.parse(address).key


def normalize_for_lookup(network: str, address: str) -> NormalizedAddress:
    """:func:`normalize` for the screener's hot path: the same validation, key, kind, payload and receivers, but
    an EVM address's ``display`` is its lowercase form (the EIP-55 hash is skipped, as in :func:`normalize_key`)."""
    entry = _entry(network)
    net = entry.network
    _precheck(net, address)
    if net.formats == _EVM:
        lower = _evm_lower_body(net, address)[0]
        return NormalizedAddress(ChainFamily.EVM, "evm:0x" + lower, "0x" + lower, "evm", bytes.fromhex(lower))
    return entry.parse(address)


# The network whose spelling a key of each family uses: the first network of the family in the table.
_FAMILY_NETWORK: Final[dict[str, Network]] = {}
for _net in _NETWORK_TABLE:
    _FAMILY_NETWORK.setdefault(_net.family.value, _net)


def parse_key(key: str) -> NormalizedAddress:
    """The address a lookup key names (with its kind and payload), e.g. for deriving related addresses from it.

    Raises :class:`UnsupportedNetwork` for an unknown family and :class:`InvalidAddress` for a string that is not
    a key :func:`normalize` produces.
    """
    family, _sep, canonical = key.partition(":")
    net = _FAMILY_NETWORK.get(family)
    if net is None:
        raise UnsupportedNetwork(family, f"{_shown(key)} is not an address key (unknown family {family!r})")
    return normalize(net.name, canonical)


def network_of_key(key: str) -> str:
    """The network whose spelling a key's body is (the first network of its family), e.g. "tron" for "trx:T..."."""
    net = _FAMILY_NETWORK.get(key.partition(":")[0])
    if net is None:
        raise UnsupportedNetwork(key, f"{_shown(key)} is not an address key")
    return net.name


def key_for(family: ChainFamily, kind: str, payload: bytes) -> str:
    """The key of the destination of ``kind`` with ``payload`` (see :attr:`NormalizedAddress.payload`).

    Supported: EVM "evm"; TRON "tron"; the Base58Check kinds of every Bitcoin-family network ("p2pkh",
    "p2sh"; Bitcoin Cash as CashAddr); segwit "p2wpkh", "p2wsh", "p2tr" where the family has an HRP; Zcash
    "sapling" and "orchard" receivers; Solana "account". Anything else raises ValueError.
    """
    net = _FAMILY_NETWORK[family.value]
    special = _KEY_ENCODERS.get((family, kind))
    spelled: str | None = None
    if special is not None and len(payload) == special[0]:
        spelled = special[1](payload)
    elif (segwit := _SEGWIT_KINDS.get(kind)) is not None and net.segwit_hrp is not None and len(payload) == segwit[1]:
        spelled = _segwit_encode(net.segwit_hrp, segwit[0], payload)
    elif (params := _B58_PARAMS.get(net.name)) is not None and kind in params[3] and len(payload) == 20:
        spelled = _b58check_encode(params[3][kind] + payload)
    if spelled is None:
        raise ValueError(f"no {family.value} key for a {kind!r} destination of {len(payload)} bytes")
    return f"{family.value}:{spelled}"


# (family, kind) -> (payload length, spelling of the key's body) where the generic Base58Check/segwit rules do
# not apply.
_KEY_ENCODERS: Final[dict[tuple[ChainFamily, str], tuple[int, Callable[[bytes], str]]]] = {
    (ChainFamily.EVM, "evm"): (20, lambda payload: "0x" + payload.hex()),
    (ChainFamily.BITCOIN_CASH, "p2pkh"): (20, lambda payload: _cashaddr_encode(0x00, payload)),
    (ChainFamily.BITCOIN_CASH, "p2sh"): (20, lambda payload: _cashaddr_encode(0x08, payload)),
    (ChainFamily.SOLANA, "account"): (32, lambda payload: _b58_encode(payload, _B58_ALPHABET)),
    (ChainFamily.ZCASH, "sapling"): (_ZCASH_RECEIVER_BYTES, lambda raw: _zcash_receiver(_UA_SAPLING, raw).display),
    (ChainFamily.ZCASH, "orchard"): (_ZCASH_RECEIVER_BYTES, lambda raw: _zcash_receiver(_UA_ORCHARD, raw).display),
}


# Segwit kind -> (witness version, program length).
_SEGWIT_KINDS: Final = {"p2wpkh": (0, 20), "p2wsh": (0, 32), "p2tr": (1, 32)}


def networks_for_asset(asset: str) -> tuple[str, ...]:
    """Candidate networks, most likely first, for a watchlist ticker (OFAC style); () if unknown."""
    return _ASSET_NETWORKS.get(asset.upper(), ())


def normalize_listed(asset: str, address: str) -> NormalizedAddress:
    """Normalize a watchlist entry filed under ticker ``asset``: the first candidate network that accepts it.

    Raises :class:`UnsupportedNetwork` (with ``network`` = the ticker) if the ticker is unknown, and
    :class:`InvalidAddress` with the reason of the failure that got furthest if no candidate accepts it.
    """
    return _first_candidate(asset, address, normalize)


def normalize_listed_key(asset: str, address: str) -> str:
    """``normalize_listed(asset, address).key`` without the display form (list loaders only need the key;
    computing EIP-55 for millions of listed EVM addresses was a third of a large sync's time)."""
    return _first_candidate(asset, address, normalize_key)


def _first_candidate(asset: str, address: str, parse: Callable[[str, str], _T]) -> _T:
    candidates = networks_for_asset(asset)
    if not candidates:
        raise UnsupportedNetwork(asset, f"no supported network for asset ticker {_shown(asset)}")
    errors: list[InvalidAddress] = []
    for network in candidates:
        try:
            return parse(network, address)
        except InvalidAddress as exc:
            errors.append(exc)
    # max() keeps the first of equally specific failures, i.e. the most likely network wins ties.
    best = max(errors, key=lambda exc: exc.specificity)
    if len(errors) == 1:
        raise best
    raise InvalidAddress(
        best.reason,
        best.network,
        address,
        f"{_shown(address)} is not a valid {asset.upper()} address on any of {', '.join(candidates)}; closest: {best}",
    )
