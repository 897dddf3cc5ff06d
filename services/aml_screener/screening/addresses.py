"""Address normalization: when are two address strings "the same address"?

This module owns one decision for the whole service: turning a ``(network, address)`` pair as typed by a
user, an exchange or a watchlist into a :class:`NormalizedAddress` whose ``key`` is the watchlist lookup key.
The watchlist loader and the screener both call :func:`normalize` (the loader through
:func:`normalize_listed`), so a string that is listed and a string that is withdrawn to are the same address
exactly when their keys are equal. It is pure (no I/O, no clock, no globals that change) and sits on the hot
path, so the common paths avoid regexes, exceptions and per-call table building.

Rules, in short (details next to the code):

* A **family** is one address space and the key namespace: every EVM chain shares ``evm:``, so the same
  ``0x`` address on Ethereum, BSC or Polygon is one key; Bitcoin and its forks each have their own
  family even where the strings coincide (``3...`` is ``btc:3...`` on Bitcoin, ``ltc:3...`` on Litecoin).
* **EVM**: ``0x`` + 40 hex digits; a mixed-case body must carry a valid EIP-55 checksum. Key is lowercase.
* **Base58Check** (Bitcoin family, TRON): case-sensitive and never re-cased; the checksum, the payload length
  and the network's version bytes are all verified. Key is the exact string (Base58 spellings are unique).
* **Segwit bech32/bech32m** (BIP-173/BIP-350): single-case, checksum variant tied to the witness version.
  Key is lowercase.
* Input is never repaired: surrounding whitespace, wrong case of a case-sensitive format, or text appended to
  an address make it invalid (:class:`InvalidAddress` with a stable ``reason`` code), never "fixed".

Adding a format (BCH CashAddr, XRP, Monero, Solana, Stellar, ...) means: a member of :class:`AddressFormat`,
a ``claims``/``parse`` pair registered in ``_FORMATS``, any parameters it needs as new :class:`Network`
fields, and network rows in ``_NETWORK_TABLE``. Callers of :func:`normalize` do not change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from Crypto.Hash import keccak

__all__ = [
    "MAX_ADDRESS_LENGTH",
    "AddressFormat",
    "ChainFamily",
    "InvalidAddress",
    "Network",
    "NormalizedAddress",
    "UnsupportedNetwork",
    "known_networks",
    "networks_for_asset",
    "normalize",
    "normalize_key",
    "normalize_listed",
    "resolve_network",
    "to_checksum_address",
]

#: Longest input looked at at all; anything longer is rejected before any parsing work.
MAX_ADDRESS_LENGTH: Final = 128


class ChainFamily(StrEnum):
    """The key namespace: one family is one address space."""

    EVM = "evm"
    BITCOIN = "btc"
    LITECOIN = "ltc"
    DOGECOIN = "doge"
    DASH = "dash"
    ZCASH = "zec"  # transparent t-addresses only
    BITCOIN_GOLD = "btg"
    BITCOIN_CASH = "bch"  # legacy Base58 form only for now (CashAddr is recognised and reported, not parsed)
    BITCOIN_SV = "bsv"
    VERGE = "xvg"
    TRON = "trx"


class AddressFormat(StrEnum):
    """A textual address encoding; each has one validator in ``_FORMATS``."""

    EVM_HEX = "evm-hex"
    BASE58CHECK = "base58check"
    SEGWIT = "segwit"  # bech32 / bech32m, BIP-173 / BIP-350
    CASHADDR = "cashaddr"  # recognised so it gets a clear reason; parsing comes with the CashAddr issue


@dataclass(frozen=True, slots=True)
class NormalizedAddress:
    """A validated address. Two inputs denote the same address exactly when their ``key`` is equal."""

    family: ChainFamily
    key: str  # f"{family.value}:{canonical}"
    display: str  # EIP-55 for EVM, lowercase for bech32, the exact string for Base58
    kind: str  # "evm", "p2pkh", "p2sh", "p2wpkh", "p2wsh", "p2tr", "segwit", "tron"


@dataclass(frozen=True, slots=True)
class Network:
    """One supported network and the parameters its address formats need."""

    name: str  # canonical, lowercase, e.g. "bitcoin-cash"
    family: ChainFamily
    title: str  # for messages, e.g. "Bitcoin Cash"
    formats: tuple[AddressFormat, ...]  # tried in this order (see ``_dispatch``)
    # Base58Check: (version bytes, kind). All versions of one network have the same length; the payload is
    # version + 20-byte hash (HASH160 for Bitcoin-family, Keccak-derived for TRON).
    base58_versions: tuple[tuple[bytes, str], ...] = ()
    segwit_hrp: str | None = None  # BIP-173 human-readable part, lowercase
    aliases: tuple[str, ...] = ()


class InvalidAddress(ValueError):
    """The address is not a valid address of the network. ``reason`` is a short stable machine code."""

    reason: str
    network: str
    address: str

    def __init__(self, reason: str, network: str, address: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.network = network
        self.address = address

    def __reduce__(self) -> tuple[type[InvalidAddress], tuple[str, str, str, str]]:
        return (type(self), (self.reason, self.network, self.address, str(self)))


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
    # Litecoin P2SH moved from 0x05 ("3...") to 0x32 ("M..."); wallets and lists still carry the legacy form.
    Network("litecoin", ChainFamily.LITECOIN, "Litecoin", _SEGWIT_B58,
            base58_versions=((b"\x30", "p2pkh"), (b"\x32", "p2sh"), (b"\x05", "p2sh")),
            segwit_hrp="ltc", aliases=("ltc",)),
    Network("dogecoin", ChainFamily.DOGECOIN, "Dogecoin", _B58,
            base58_versions=((b"\x1e", "p2pkh"), (b"\x16", "p2sh")), aliases=("doge",)),
    Network("dash", ChainFamily.DASH, "Dash", _B58,
            base58_versions=((b"\x4c", "p2pkh"), (b"\x10", "p2sh"))),
    # Zcash transparent addresses have a two-byte version: t1 = 1CB8 (P2PKH), t3 = 1CBD (P2SH).
    Network("zcash", ChainFamily.ZCASH, "Zcash", _B58,
            base58_versions=((b"\x1c\xb8", "p2pkh"), (b"\x1c\xbd", "p2sh")), aliases=("zec",)),
    Network("bitcoin-gold", ChainFamily.BITCOIN_GOLD, "Bitcoin Gold", _B58,
            base58_versions=((b"\x26", "p2pkh"), (b"\x17", "p2sh")), aliases=("btg", "bitcoingold")),
    # Bitcoin Cash and Bitcoin SV kept Bitcoin's legacy version bytes.
    Network("bitcoin-cash", ChainFamily.BITCOIN_CASH, "Bitcoin Cash",
            (AddressFormat.CASHADDR, AddressFormat.BASE58CHECK),
            base58_versions=((b"\x00", "p2pkh"), (b"\x05", "p2sh")), aliases=("bch", "bitcoincash")),
    Network("bitcoin-sv", ChainFamily.BITCOIN_SV, "Bitcoin SV", _B58,
            base58_versions=((b"\x00", "p2pkh"), (b"\x05", "p2sh")), aliases=("bsv", "bitcoinsv")),
    Network("verge", ChainFamily.VERGE, "Verge", _B58,
            base58_versions=((b"\x1e", "p2pkh"), (b"\x21", "p2sh")), aliases=("xvg",)),
    # TRON: Base58Check of 0x41 + 20 bytes, which always renders as 34 characters starting with "T".
    Network("tron", ChainFamily.TRON, "TRON", _B58,
            base58_versions=((b"\x41", "tron"),), aliases=("trx", "trc20", "trc-20")),
)  # fmt: skip

# Candidate networks per watchlist ticker (OFAC spells Bitcoin "XBT"), most likely first. OFAC files
# EVM, TRON and Omni-layer (Bitcoin) addresses all under USDT.
_ASSET_NETWORKS: Final[dict[str, tuple[str, ...]]] = {
    "XBT": ("bitcoin",),
    "BTC": ("bitcoin",),
    "ETH": ("ethereum",),
    "USDT": ("ethereum", "tron", "bitcoin"),
    "USDC": ("ethereum",),
    "TRX": ("tron",),
    "LTC": ("litecoin",),
    "BCH": ("bitcoin-cash",),
    "BSV": ("bitcoin-sv",),
    "BTG": ("bitcoin-gold",),
    "DASH": ("dash",),
    "ZEC": ("zcash",),
    "XVG": ("verge",),
    "ETC": ("ethereum-classic",),
    "ARB": ("arbitrum",),
    "BSC": ("bsc",),
    "BNB": ("bsc",),
    "DOGE": ("dogecoin",),
}


# --------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------

# How far parsing got before failing; normalize_listed reports the failure that got furthest.
_SPECIFICITY: Final[dict[str, int]] = {
    "empty": 0,
    "too_long": 0,
    "whitespace": 0,
    "bad_format": 1,
    "bad_characters": 2,
    "bad_length": 3,
    "mixed_case": 3,
    "bad_hrp": 3,
    "bad_checksum": 4,
    "bad_version": 5,
    "bad_eip55_checksum": 5,
    "bad_witness_program": 5,
    "unsupported_format": 6,
}


def _shown(text: str) -> str:
    """repr() of user input for messages, cut so that a huge input does not make a huge message."""
    if len(text) > MAX_ADDRESS_LENGTH:
        return f"{text[:64]!r}... ({len(text)} characters)"
    return repr(text)


def _invalid(net: Network, address: str, reason: str, detail: str) -> InvalidAddress:
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
            raise _invalid(net, address, "bad_characters", "the prefix must be a lowercase '0x'")
        # Not this format at all (no 0x prefix): ranked below a bad character inside a recognised format.
        raise _invalid(net, address, "bad_format", "an EVM address starts with '0x'")
    if len(address) != 42:
        raise _invalid(net, address, "bad_length", f"expected '0x' + 40 hex digits, got {len(address) - 2} characters")
    body = address[2:]
    lower = body.lower()
    # str.strip(chars) removes every leading/trailing char in the set: empty result <=> all are hex digits.
    # (int(body, 16) would also accept "_", "+" and whitespace.)
    if lower.strip(_HEX_DIGITS):
        raise _invalid(net, address, "bad_characters", "the 40 characters after '0x' must be hex digits")
    if body == lower or body == body.upper():
        # EIP-55: an all-lowercase or all-uppercase body carries no checksum and is valid as is.
        return lower, None
    if _eip55_body(lower) != body:
        raise _invalid(
            net,
            address,
            "bad_eip55_checksum",
            "mixed-case hex must match its EIP-55 checksum (the case of some letters is wrong)",
        )
    return lower, address


def _parse_evm(net: Network, address: str) -> NormalizedAddress:
    lower, display = _evm_lower_body(net, address)
    if display is None:
        display = "0x" + _eip55_body(lower)
    return NormalizedAddress(ChainFamily.EVM, "evm:0x" + lower, display, "evm")


# --------------------------------------------------------------------------------------------------------
# Base58Check (Bitcoin family, TRON)
# --------------------------------------------------------------------------------------------------------

_B58_ALPHABET: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
# bytes.translate table: ASCII code -> digit value, 0xFF for characters outside the alphabet
# (0, O, I and l are deliberately absent from Base58).
_B58_DIGITS: Final = bytes(_B58_ALPHABET.index(chr(i)) if chr(i) in _B58_ALPHABET else 0xFF for i in range(256))
_BAD_DIGIT: Final = 0xFF  # translate-table marker for "not in the alphabet"


def _parse_base58check(net: Network, address: str) -> NormalizedAddress:
    digits = address.encode("ascii").translate(_B58_DIGITS)  # ASCII is checked by _precheck
    if _BAD_DIGIT in digits:
        bad = address[digits.index(_BAD_DIGIT)]
        raise _invalid(net, address, "bad_characters", f"{bad!r} is not a Base58 character")
    value = 0
    for digit in digits:
        value = value * 58 + digit
    # Base58 keeps leading zero bytes as leading '1's, so the decoded length is (#leading '1') + bytes of the
    # number. This makes the string <-> bytes mapping one-to-one: the exact string is a canonical key.
    size = len(address) - len(address.lstrip("1")) + (value.bit_length() + 7) // 8
    if size < 5:
        raise _invalid(net, address, "bad_length", "it is too short to carry a Base58Check checksum")
    raw = value.to_bytes(size, "big")
    payload = raw[:-4]
    # Base58Check: checksum = first 4 bytes of SHA-256(SHA-256(payload)). Checked before the length, so a
    # typo (inserted or dropped character) reads as a checksum error and a well-formed Base58Check string
    # of another network (e.g. a 2-byte-version Zcash address on Bitcoin) as a length/version error.
    if hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] != raw[-4:]:
        raise _invalid(net, address, "bad_checksum", "the Base58Check checksum does not match (typo?)")
    versions, version_len, expected = _B58_PARAMS[net.name]
    if size != expected:
        raise _invalid(
            net,
            address,
            "bad_length",
            f"it decodes to {size} bytes, not {expected} (version, 20-byte hash, checksum)",
        )
    kind = versions.get(payload[:version_len])
    if kind is None:
        raise _invalid(
            net,
            address,
            "bad_version",
            f"version byte(s) 0x{payload[:version_len].hex()} belong to another network or address type",
        )
    return NormalizedAddress(net.family, f"{net.family.value}:{address}", address, kind)


def _claims_any(net: Network, address: str) -> bool:
    return True


# --------------------------------------------------------------------------------------------------------
# Segwit: bech32 (BIP-173) and bech32m (BIP-350)
# --------------------------------------------------------------------------------------------------------

_BECH32_CHARSET: Final = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_DIGITS: Final = bytes(_BECH32_CHARSET.index(chr(i)) if chr(i) in _BECH32_CHARSET else 0xFF for i in range(256))
# Same characters rewritten as base-32 digits for int(..., 32): turns 5-bit groups into one integer in C.
_BECH32_TO_BASE32: Final = str.maketrans(_BECH32_CHARSET, "0123456789abcdefghijklmnopqrstuv")
_BECH32_GENERATOR: Final = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
# One polymod step XORs in the generators selected by the 5 bits shifted out; precomputed for all 32 values.


def _generator_xor(top: int) -> int:
    out = 0
    for i, gen in enumerate(_BECH32_GENERATOR):
        if (top >> i) & 1:
            out ^= gen
    return out


# One polymod step XORs in the generators selected by the 5 bits shifted out; precomputed for all 32 values.
_POLYMOD_TABLE: Final = tuple(_generator_xor(top) for top in range(32))
_BECH32_CONST: Final = 1  # BIP-173
_BECH32M_CONST: Final = 0x2BC830A3  # BIP-350
_BECH32_MAX_LENGTH: Final = 90  # BIP-173
# Every segwit HRP we know, including test networks, so e.g. a testnet "tb1..." on "bitcoin" is reported as
# a wrong HRP rather than as bad Base58.
_KNOWN_SEGWIT_HRPS: Final = frozenset({"bc", "tb", "bcrt", "ltc", "tltc", "rltc"})


def _polymod(state: int, values: bytes) -> int:
    table = _POLYMOD_TABLE
    for value in values:
        state = ((state & 0x1FFFFFF) << 5) ^ value ^ table[state >> 25]
    return state


def _hrp_state(hrp: str) -> int:
    """Polymod state after the HRP expansion (BIP-173 ``hrp_expand``); constant per network."""
    expanded = bytes([ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp])
    return _polymod(1, expanded)


def _claims_segwit(net: Network, address: str) -> bool:
    sep = address.find("1")
    return sep > 0 and address[:sep].lower() in _KNOWN_SEGWIT_HRPS


def _bech32_decode(net: Network, address: str) -> tuple[str, str, bytes, bool]:
    """BIP-173/BIP-350 string checks: (lowercase address, data part, 5-bit values, is bech32m)."""
    if len(address) > _BECH32_MAX_LENGTH:
        raise _invalid(net, address, "bad_length", f"a bech32 address has at most {_BECH32_MAX_LENGTH} characters")
    lower = address.lower()
    # BIP-173: decoders must not accept strings mixing upper and lower case; all-uppercase is valid.
    if address != lower and address != address.upper():
        raise _invalid(net, address, "mixed_case", "bech32 addresses must be all lowercase or all uppercase")
    sep = lower.rfind("1")  # the data part cannot contain '1', so the last '1' is the separator
    hrp = lower[:sep]
    if hrp != net.segwit_hrp:
        if lower.startswith(f"{net.segwit_hrp}1"):
            raise _invalid(net, address, "bad_characters", "'1' is not a bech32 character after the separator")
        raise _invalid(
            net,
            address,
            "bad_hrp",
            f"the prefix {hrp!r} is not {net.title}'s {net.segwit_hrp!r} (another chain or a test network)",
        )
    data_part = lower[sep + 1 :]
    values = data_part.encode("ascii").translate(_BECH32_DIGITS)
    if _BAD_DIGIT in values:
        bad = data_part[values.index(_BAD_DIGIT)]
        raise _invalid(net, address, "bad_characters", f"{bad!r} is not a bech32 character")
    # At least a witness version, one program group and the 6-character checksum (program length rules below).
    if len(values) < 8:
        raise _invalid(net, address, "bad_length", "the data part is too short for a segwit address")
    residue = _polymod(_HRP_STATES[net.name], values)
    if residue == _BECH32_CONST:
        is_bech32m = False
    elif residue == _BECH32M_CONST:
        is_bech32m = True
    else:
        raise _invalid(net, address, "bad_checksum", "the bech32 checksum does not match (typo?)")
    return lower, data_part, values, is_bech32m


def _parse_segwit(net: Network, address: str) -> NormalizedAddress:
    lower, data_part, values, is_bech32m = _bech32_decode(net, address)
    version = values[0]
    if version > 16:
        raise _invalid(net, address, "bad_version", f"witness version {version} does not exist (0..16)")
    # Program: 5-bit groups -> bytes. BIP-173: an incomplete final group must be at most 4 bits, all zero.
    groups = len(values) - 7
    n_bits = groups * 5
    pad_bits = n_bits % 8
    program_len = n_bits // 8
    program_int = int(data_part[1:-6].translate(_BECH32_TO_BASE32), 32)
    if pad_bits > 4 or program_int & ((1 << pad_bits) - 1):
        raise _invalid(net, address, "bad_witness_program", "the witness program has invalid padding")
    # BIP-141/173: program 2..40 bytes; version 0 only 20 (P2WPKH) or 32 (P2WSH).
    if not 2 <= program_len <= 40 or (version == 0 and program_len not in (20, 32)):
        raise _invalid(
            net,
            address,
            "bad_witness_program",
            f"a version {version} witness program cannot be {program_len} bytes",
        )
    # BIP-350: version 0 must use bech32, versions 1..16 must use bech32m.
    if is_bech32m != (version != 0):
        used, needed = ("bech32m", "bech32") if is_bech32m else ("bech32", "bech32m")
        raise _invalid(
            net,
            address,
            "bad_checksum",
            f"witness version {version} requires a {needed} checksum but it has a {used} one (BIP-350)",
        )
    if version == 0:
        kind = "p2wpkh" if program_len == 20 else "p2wsh"
    elif version == 1 and program_len == 32:
        kind = "p2tr"  # BIP-341 taproot
    else:
        kind = "segwit"  # future witness versions / lengths: valid to send to, not yet defined
    return NormalizedAddress(net.family, f"{net.family.value}:{lower}", lower, kind)


# --------------------------------------------------------------------------------------------------------
# CashAddr (Bitcoin Cash): recognised, not yet parsed
# --------------------------------------------------------------------------------------------------------


def _claims_cashaddr(net: Network, address: str) -> bool:
    # Legacy Base58 BCH addresses start with '1' or '3'; a CashAddr payload starts with 'q' (P2PKH) or 'p'
    # (P2SH), optionally behind "bitcoincash:", and uses the bech32 alphabet (42+ characters for a
    # 160-bit hash). Claiming these never hides a valid legacy address (and Base58 is still tried after).
    lower = address.lower()
    if lower.startswith("bitcoincash:"):
        return True
    return len(lower) >= 42 and lower[0] in "qp" and _BAD_DIGIT not in lower.encode("ascii").translate(_BECH32_DIGITS)


def _parse_cashaddr(net: Network, address: str) -> NormalizedAddress:
    raise _invalid(net, address, "unsupported_format", "the CashAddr format is not supported yet")


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
}


class _Entry:
    """A network with its parsers resolved once, so normalize() is two dict lookups and a call."""

    __slots__ = ("network", "parsers")

    def __init__(self, network: Network) -> None:
        self.network = network
        self.parsers: tuple[tuple[_Claims, _Parse], ...] = tuple(_FORMATS[f] for f in network.formats)

    def parse(self, address: str) -> NormalizedAddress:
        net = self.network
        parsers = self.parsers
        if len(parsers) == 1:
            return parsers[0][1](net, address)
        # Several formats: the first one that claims the string decides its error, but a later format still
        # gets a chance, so a claim that is only a lookalike (a Base58 string beginning "LTC1...") cannot
        # make a valid address invalid. Only invalid input pays for the exceptions.
        first_error: InvalidAddress | None = None
        for claims, parse in parsers:
            if claims(net, address):
                try:
                    return parse(net, address)
                except InvalidAddress as exc:
                    if first_error is None:
                        first_error = exc
        if first_error is None:  # pragma: no cover - every network ends with a claim-all format
            raise _invalid(net, address, "bad_characters", "it is not in any known address format")
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


def _b58_params(net: Network) -> tuple[dict[bytes, str], int, int]:
    """(version -> kind, version length, decoded length = version + 20-byte hash + 4-byte checksum)."""
    versions = dict(net.base58_versions)
    lengths = {len(v) for v in versions}
    if len(lengths) != 1:
        raise RuntimeError(f"{net.name}: Base58 versions must all have the same length")
    version_len = lengths.pop()
    return versions, version_len, version_len + 20 + 4


_B58_PARAMS: Final = {n.name: _b58_params(n) for n in _NETWORK_TABLE if n.base58_versions}
_HRP_STATES: Final[dict[str, int]] = {n.name: _hrp_state(n.segwit_hrp) for n in _NETWORK_TABLE if n.segwit_hrp}
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
        raise _invalid(net, address, "empty", "the address is empty")
    if len(address) > MAX_ADDRESS_LENGTH:
        raise _invalid(net, address, "too_long", f"it is longer than {MAX_ADDRESS_LENGTH} characters")
    # Same definition of whitespace as str.strip(), but O(1): the screener must not silently strip input.
    if address[0].isspace() or address[-1].isspace():
        raise _invalid(net, address, "whitespace", "it has leading or trailing whitespace")
    # Every supported format is printable ASCII; control characters (NUL, ESC, DEL...) never belong to one.
    if not (address.isascii() and address.isprintable()):
        raise _invalid(net, address, "bad_characters", "it contains non-ASCII or control characters")


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


def networks_for_asset(asset: str) -> tuple[str, ...]:
    """Candidate networks, most likely first, for a watchlist ticker (OFAC style); () if unknown."""
    return _ASSET_NETWORKS.get(asset.upper(), ())


def normalize_listed(asset: str, address: str) -> NormalizedAddress:
    """Normalize a watchlist entry filed under ticker ``asset``: the first candidate network that accepts it.

    Raises :class:`UnsupportedNetwork` (with ``network`` = the ticker) if the ticker is unknown, and
    :class:`InvalidAddress` with the reason of the failure that got furthest if no candidate accepts it.
    """
    candidates = networks_for_asset(asset)
    if not candidates:
        raise UnsupportedNetwork(asset, f"no supported network for asset ticker {_shown(asset)}")
    errors: list[InvalidAddress] = []
    for network in candidates:
        try:
            return normalize(network, address)
        except InvalidAddress as exc:
            errors.append(exc)
    # max() keeps the first of equally specific failures, i.e. the most likely network wins ties.
    best = max(errors, key=lambda exc: _SPECIFICITY.get(exc.reason, 0))
    if len(errors) == 1:
        raise best
    raise InvalidAddress(
        best.reason,
        best.network,
        address,
        f"{_shown(address)} is not a valid {asset.upper()} address on any of {', '.join(candidates)}; closest: {best}",
    )
