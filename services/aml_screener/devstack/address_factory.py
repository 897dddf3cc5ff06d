"""Deterministic synthetic addresses for the devstack event generator, tests and benchmarks.

Everything here is driven by a caller-supplied :class:`random.Random`, so a seed reproduces the same
addresses. The network parameters (version bytes, HRPs) come from the table in
:mod:`aml_screener.screening.addresses`, but the encoders are independent of its decoders: Base58Check
(Bitcoin and XRP alphabets) is produced with the ``base58`` package, bech32/bech32m with the BIP-350 reference
algorithm below, CashAddr with the spec's reference checksum, Monero Base58 with ``base58``'s integer codec per
block, Stellar StrKey with the standard library's base32 and CRC, so the generator can serve as a check on the
normalizer rather than mirroring its bugs. Zcash unified addresses use the domain's F4Jumble permutation (a
published algorithm, checked against the official zcash-test-vectors in tests) with the bech32m encoder below.
"""

from __future__ import annotations

import base64
import binascii
import random
from collections.abc import Callable
from typing import Final

import base58
from Crypto.Hash import keccak

from aml_screener.screening.addresses import (
    AddressFormat,
    Network,
    f4jumble,
    known_networks,
    normalize,
    resolve_network,
    to_checksum_address,
)

__all__ = [
    "BECH32_STYLES",
    "CASHADDR_KINDS",
    "CASHADDR_STYLES",
    "EVM_STYLES",
    "MONERO_KINDS",
    "SEGWIT_KINDS",
    "TRON_STYLES",
    "case_variants",
    "cashaddr_address",
    "corrupt",
    "kinds_for",
    "monero_address",
    "random_address",
    "segwit_address",
    "stellar_address",
    "tex_address",
    "unified_address",
]

#: Spellings of an EVM address: all-lowercase, uppercase body (lowercase "0x"), EIP-55 checksummed.
EVM_STYLES: Final = ("lower", "upper", "checksum")
#: Spellings of a bech32 address (BIP-173 allows either case, never mixed).
BECH32_STYLES: Final = ("lower", "upper")
#: Spellings of a Bitcoin Cash address: CashAddr with the "bitcoincash:" prefix in lower or upper case, without
#: it ("bare"), and the legacy Base58Check form (P2PKH and P2SH with a 160-bit hash only).
CASHADDR_STYLES: Final = ("lower", "upper", "bare-lower", "bare-upper", "legacy")
#: Spellings of a TRON address: Base58Check "T...", hex "41..." in lower or upper case, and "0x41...".
TRON_STYLES: Final = ("base58", "hex", "hex-upper", "0x-hex")
#: Segwit kinds and their (witness version, program length).
SEGWIT_KINDS: Final[dict[str, tuple[int, int]]] = {"p2wpkh": (0, 20), "p2wsh": (0, 32), "p2tr": (1, 32)}
#: CashAddr kinds and their (type bits, hash length): P2PKH, P2SH, P2SH32 and their token-aware forms.
CASHADDR_KINDS: Final[dict[str, tuple[int, int]]] = {
    "p2pkh": (0, 20),
    "p2sh": (1, 20),
    "p2sh32": (1, 32),
    "p2pkh-tokens": (2, 20),
    "p2sh-tokens": (3, 20),
    "p2sh32-tokens": (3, 32),
}
#: Monero kinds and their mainnet network tags.
MONERO_KINDS: Final[dict[str, int]] = {"standard": 18, "integrated": 19, "subaddress": 42}
#: Zcash bech32 kinds: TEX (ZIP-320), Sapling, unified address (ZIP-316).
ZCASH_BECH32_KINDS: Final = ("tex", "sapling", "unified")
_ZCASH_P2PKH_VERSION: Final = b"\x1c\xb8"
# ZIP-316 receiver typecodes and lengths: P2PKH, P2SH, Sapling, Orchard.
_UA_RECEIVERS: Final = {0x00: 20, 0x01: 20, 0x02: 43, 0x03: 43}

_B58_ALPHABET: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_XRP_ALPHABET: Final = base58.RIPPLE_ALPHABET.decode(
    "ascii"
)  # rpshnaf39wBUDNEGHJKLM4PQRST7VWXYZ2bcdeCg65jkm8oFqi1tuvAxyz
_XRP_CLASSIC_VERSION: Final = b"\x00"
_XADDRESS_MAINNET: Final = b"\x05\x44"
_BECH32_CHARSET: Final = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_CONST: Final = 1
_BECH32M_CONST: Final = 0x2BC830A3
_CASHADDR_PREFIX: Final = "bitcoincash"
_CASHADDR_HASH_SIZES: Final = (20, 24, 28, 32, 40, 48, 56, 64)
_LEGACY_VERSIONS: Final = {0: b"\x00", 1: b"\x05"}  # CashAddr type bits -> legacy Base58Check version byte
_STRKEY_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_STRKEY_ACCOUNT: Final = 6 << 3
_STRKEY_MUXED: Final = 12 << 3
_XMR_ENCODED_SIZES: Final = (0, 2, 3, 5, 6, 7, 9, 10, 11)
_NOT_BASE58: Final = "0OIl"  # look-alikes a careless copy produces; none is in any Base58 alphabet
_MAX_TRIES: Final = 1000
_BITCOIN: Final = base58.BITCOIN_ALPHABET
_RIPPLE: Final = base58.RIPPLE_ALPHABET

_Check = Callable[[str], bool]


def kinds_for(network: str) -> tuple[str, ...]:
    """The address kinds :func:`random_address` can produce for ``network``."""
    net = resolve_network(network)
    kinds = [kind for fmt in net.formats for kind in _format_kinds(net, fmt)]
    # Segwit and Zcash's bech32 formats come before Base58 in the format order, but Base58 kinds have always been
    # listed first.
    return tuple(sorted(dict.fromkeys(kinds), key=lambda k: k in SEGWIT_KINDS or k in ZCASH_BECH32_KINDS))


def random_address(network: str, rng: random.Random, *, kind: str | None = None, style: str | None = None) -> str:
    """A valid random address for ``network``.

    ``kind`` picks the address type (see :func:`kinds_for`; random if omitted). ``style`` picks the spelling:
    one of :data:`EVM_STYLES` for EVM (random if omitted), one of :data:`BECH32_STYLES` for segwit and BNB
    Beacon Chain (lowercase if omitted), one of :data:`CASHADDR_STYLES` for Bitcoin Cash ("lower", i.e.
    "bitcoincash:" + lowercase, if omitted), one of :data:`TRON_STYLES` for TRON ("base58" if omitted); the
    other formats have exactly one spelling and accept no style.
    """
    net = resolve_network(network)
    kinds = kinds_for(net.name)
    if kind is None:
        kind = rng.choice(kinds)
    elif kind not in kinds:
        raise ValueError(f"{net.name} has no address kind {kind!r}; choose from {kinds}")
    fmt = next(f for f in net.formats if kind in _format_kinds(net, f))
    return _GENERATORS[fmt](net, kind, style, rng)


def _format_kinds(net: Network, fmt: AddressFormat) -> tuple[str, ...]:
    if fmt is AddressFormat.EVM_HEX:
        return ("evm",)
    if fmt in (AddressFormat.BASE58CHECK, AddressFormat.TRON_HEX):
        return tuple(kind for _version, kind in net.base58_versions)
    # BCH_LEGACY is a spelling (style) of the CashAddr kinds "p2pkh" and "p2sh", not a kind of its own.
    return _KINDS_BY_FORMAT.get(fmt, ())


_KINDS_BY_FORMAT: Final[dict[AddressFormat, tuple[str, ...]]] = {
    AddressFormat.SEGWIT: tuple(SEGWIT_KINDS),
    AddressFormat.CASHADDR: tuple(CASHADDR_KINDS),
    AddressFormat.BECH32: ("bnb",),
    AddressFormat.XRP_BASE58: ("classic", "x-address"),
    AddressFormat.MONERO_BASE58: tuple(MONERO_KINDS),
    AddressFormat.SOLANA_BASE58: ("account",),
    AddressFormat.STRKEY: ("account", "muxed"),
    AddressFormat.ZCASH_BECH32: ZCASH_BECH32_KINDS,
}


def _single_spelling(style: str | None) -> None:
    if style is not None:
        raise ValueError("Base58, Monero and StrKey addresses have a single spelling; style must be None")


def _gen_evm(net: Network, kind: str, style: str | None, rng: random.Random) -> str:
    return _evm_address(rng.randbytes(20).hex(), style if style is not None else rng.choice(EVM_STYLES))


def _gen_base58check(net: Network, kind: str, style: str | None, rng: random.Random) -> str:
    _single_spelling(style)
    version_bytes = rng.choice([v for v, k in net.base58_versions if k == kind])
    return base58.b58encode_check(version_bytes + rng.randbytes(20)).decode("ascii")


def _gen_tron(net: Network, kind: str, style: str | None, rng: random.Random) -> str:
    version_bytes = rng.choice([v for v, k in net.base58_versions if k == kind])
    return _tron_style(version_bytes + rng.randbytes(20), style or "base58")


def _gen_segwit(net: Network, kind: str, style: str | None, rng: random.Random) -> str:
    witness_version, length = SEGWIT_KINDS[kind]
    return _bech32_style(segwit_address(_hrp(net), witness_version, rng.randbytes(length)), style)


def _gen_bech32_account(net: Network, kind: str, style: str | None, rng: random.Random) -> str:
    return _bech32_style(_bech32_encode(_hrp(net), _to_5bit(rng.randbytes(20)), _BECH32_CONST), style)


def _gen_cashaddr(net: Network, kind: str, style: str | None, rng: random.Random) -> str:
    type_bits, length = CASHADDR_KINDS[kind]
    return _cashaddr_style(type_bits, rng.randbytes(length), style or "lower")


def _gen_xrp(net: Network, kind: str, style: str | None, rng: random.Random) -> str:
    _single_spelling(style)
    account = rng.randbytes(20)
    if kind == "classic":
        payload = _XRP_CLASSIC_VERSION + account
    else:
        # XLS-5d X-address: prefix, account id, flag (0 = no tag, 1 = 32-bit tag), 64-bit little-endian tag.
        tag = rng.getrandbits(32) if rng.random() < 0.5 else None
        flag_and_tag = b"\x00" + bytes(8) if tag is None else b"\x01" + tag.to_bytes(8, "little")
        payload = _XADDRESS_MAINNET + account + flag_and_tag
    return base58.b58encode_check(payload, alphabet=_RIPPLE).decode("ascii")


def _gen_monero(net: Network, kind: str, style: str | None, rng: random.Random) -> str:
    _single_spelling(style)
    payment_id = rng.randbytes(8) if kind == "integrated" else b""
    return monero_address(MONERO_KINDS[kind], rng.randbytes(32), rng.randbytes(32), payment_id)


def _gen_solana(net: Network, kind: str, style: str | None, rng: random.Random) -> str:
    _single_spelling(style)
    return base58.b58encode(rng.randbytes(32)).decode("ascii")


def _gen_zcash_bech32(kind: str, style: str | None, rng: random.Random) -> str:
    if kind == "tex":
        return _bech32_style(tex_address(rng.randbytes(20)), style)
    if kind == "sapling":
        return _bech32_style(_bech32_encode("zs", _to_5bit(rng.randbytes(43)), _BECH32_CONST), style)
    # A unified address: at least one shielded receiver, at most one transparent one (ZIP-316).
    shielded = rng.choice([[0x02], [0x03], [0x02, 0x03]])
    transparent = rng.choice([[], [0x00], [0x01]])
    items = {code: rng.randbytes(_UA_RECEIVERS[code]) for code in transparent + shielded}
    return _bech32_style(unified_address(items), style)


def _compact_size(value: int) -> bytes:
    """Zcash/Bitcoin CompactSize: one byte below 0xFD, else a marker and 2, 4 or 8 little-endian bytes."""
    if value < 0xFD:
        return bytes([value])
    for marker, width in ((0xFD, 2), (0xFE, 4), (0xFF, 8)):
        if value < 1 << (8 * width):
            return bytes([marker]) + value.to_bytes(width, "little")
    raise ValueError(f"{value} does not fit a CompactSize")


def tex_address(pubkey_hash: bytes) -> str:
    """ZIP-320 TEX address of a 20-byte P2PKH hash: bech32m, HRP "tex"."""
    return _bech32_encode("tex", _to_5bit(pubkey_hash), _BECH32M_CONST)


def unified_address(items: dict[int, bytes], hrp: str = "u") -> str:
    """ZIP-316 unified address of typecode -> raw receiver: TLV items in typecode order, the HRP padded to 16
    bytes, F4Jumble, bech32m."""
    raw = b"".join(_compact_size(code) + _compact_size(len(item)) + item for code, item in sorted(items.items()))
    raw += hrp.encode("ascii").ljust(16, b"\0")
    return _bech32_encode(hrp, _to_5bit(f4jumble(raw)), _BECH32M_CONST)


def _gen_stellar(net: Network, kind: str, style: str | None, rng: random.Random) -> str:
    _single_spelling(style)
    return stellar_address(rng.randbytes(32), rng.getrandbits(64) if kind == "muxed" else None)


_GENERATORS: Final[dict[AddressFormat, Callable[[Network, str, str | None, random.Random], str]]] = {
    AddressFormat.EVM_HEX: _gen_evm,
    AddressFormat.BASE58CHECK: _gen_base58check,
    AddressFormat.TRON_HEX: _gen_tron,
    AddressFormat.SEGWIT: _gen_segwit,
    AddressFormat.BECH32: _gen_bech32_account,
    AddressFormat.CASHADDR: _gen_cashaddr,
    AddressFormat.XRP_BASE58: _gen_xrp,
    AddressFormat.MONERO_BASE58: _gen_monero,
    AddressFormat.SOLANA_BASE58: _gen_solana,
    AddressFormat.STRKEY: _gen_stellar,
    AddressFormat.ZCASH_BECH32: lambda net, kind, style, rng: _gen_zcash_bech32(kind, style, rng),
}


def case_variants(network: str, address: str) -> list[str]:
    """Distinct spellings of a valid ``address`` that denote the same address (the same lookup key).

    EVM: lowercase, uppercase body (lowercase "0x"), EIP-55. Bech32: lowercase and uppercase. Bitcoin Cash:
    every CashAddr spelling (prefix or not, either case) of the plain and the token-aware type, and the legacy
    form where one exists. TRON: Base58Check and the hex spellings. An XRP X-address, a Monero integrated
    address and a Stellar muxed account: the address and its underlying account. Litecoin P2SH: the "3..." and the
    "M..." form. Zcash: TEX, Sapling and unified addresses in either case, TEX and the t1 address of its hash.
    Other Base58 formats are case-sensitive, so only the address itself.
    """
    normalized = normalize(network, address)
    formats = resolve_network(network).formats
    if normalized.kind == "evm":
        body = normalized.display[2:].lower()
        variants = ["0x" + body, "0x" + body.upper(), normalized.display]
    elif AddressFormat.CASHADDR in formats:
        variants = _cashaddr_variants(address)
    elif AddressFormat.TRON_HEX in formats:
        raw = _tron_raw(address)
        variants = [address, *(_tron_style(raw, style) for style in TRON_STYLES)]
    elif AddressFormat.BECH32 in formats or normalized.kind in (*SEGWIT_KINDS, "segwit"):
        variants = [normalized.display, normalized.display.upper()]
    elif normalized.kind == "x-address":
        account = base58.b58decode_check(address, alphabet=_RIPPLE)[2:22]
        classic = base58.b58encode_check(_XRP_CLASSIC_VERSION + account, alphabet=_RIPPLE)
        variants = [address, classic.decode("ascii")]
    elif normalized.kind == "integrated":
        keys = _monero_decode(address)
        assert keys is not None  # valid: checked by normalize() above
        variants = [address, monero_address(MONERO_KINDS["standard"], keys[1:33], keys[33:65])]
    elif normalized.kind == "muxed":
        variants = [address, stellar_address(_strkey_decode(address)[1:33])]
    elif normalized.kind in ("tex", "sapling", "unified"):
        variants = [address.lower(), address.upper()]
        if normalized.kind == "tex":  # the t1 address of the same hash is where TEX funds land
            variants.append(base58.b58encode_check(_ZCASH_P2PKH_VERSION + normalized.payload).decode("ascii"))
    elif normalized.family.value == "zec" and normalized.kind == "p2pkh":
        pubkey_hash = base58.b58decode_check(address)[2:]
        variants = [address, tex_address(pubkey_hash), tex_address(pubkey_hash).upper()]
    elif normalized.kind == "p2sh" and len(resolve_network(network).base58_versions) > len(
        {kind for _version, kind in resolve_network(network).base58_versions}
    ):
        # A kind with two version bytes in use (Litecoin P2SH "3..." and "M..."): each spells the same script.
        script_hash = base58.b58decode_check(address)[1:]
        versions = [v for v, k in resolve_network(network).base58_versions if k == "p2sh"]
        variants = [address, *(base58.b58encode_check(v + script_hash).decode("ascii") for v in versions)]
    else:
        variants = [address]
    return list(dict.fromkeys(variants))


def corrupt(address: str, rng: random.Random) -> str:
    """An invalid variant of a valid ``address`` that a careless copy could produce (same length).

    Formats with a checksum (Base58Check in either alphabet, bech32, CashAddr, Monero, StrKey): one character
    replaced by another character of the same alphabet and case, chosen so the checksum fails. EVM: a
    mixed-case spelling that is not the EIP-55 one (wrong checksum); for the rare body with at most one letter,
    where no such spelling exists, a non-hex character instead. Formats without a checksum, where any
    substitution is another valid address (TRON hex, Solana): a character from outside the alphabet.
    """
    for recognizes, corrupter in _CORRUPTERS:
        if recognizes(address):
            return corrupter(address, rng)
    return _corrupt_outside_alphabet(address, rng, _NOT_BASE58)  # Solana: Base58 without a checksum


def _is_evm(address: str) -> bool:
    return address[:2] == "0x" and len(address) == 42


def _is_bech32(address: str) -> bool:
    sep = address.rfind("1")
    return (
        sep > 0
        and address[:sep].lower() in _known_hrps()
        and address in (address.lower(), address.upper())
        and _bech32_checksum_ok(address)  # not a Base58 string that merely starts like "LTC1..."
    )


def _is_xrp(address: str) -> bool:
    return address[:1] in ("r", "X") and _base58check_ok(address, _RIPPLE)


def _corrupt_tron_hex(address: str, rng: random.Random) -> str:
    return _corrupt_outside_alphabet(address, rng, "gG", start=address.find("41") + 2)


def _corrupt_strkey(address: str, rng: random.Random) -> str:
    return _corrupt_checked(address, rng, _STRKEY_ALPHABET, _strkey_ok_except_checksum)


def _corrupt_monero(address: str, rng: random.Random) -> str:
    return _corrupt_checked(address, rng, _B58_ALPHABET, _monero_ok_except_checksum)


def _corrupt_xrp(address: str, rng: random.Random) -> str:
    return _corrupt_checked(address, rng, _XRP_ALPHABET, lambda text: not _base58check_ok(text, _RIPPLE))


def _corrupt_base58(address: str, rng: random.Random) -> str:
    return _corrupt_checked(address, rng, _B58_ALPHABET, lambda text: not _base58check_ok(text, _BITCOIN))


# ---------------------------------------------------------------------------------------------------------
# EVM
# ---------------------------------------------------------------------------------------------------------


def _evm_address(lower_body: str, style: str) -> str:
    if style == "lower":
        return "0x" + lower_body
    if style == "upper":
        return "0x" + lower_body.upper()
    if style == "checksum":
        return to_checksum_address(lower_body)
    raise ValueError(f"EVM style must be one of {EVM_STYLES}, got {style!r}")


def _is_mixed_case(text: str) -> bool:
    return text != text.lower() and text != text.upper()


def _corrupt_evm(address: str, rng: random.Random) -> str:
    checksummed = to_checksum_address(address)
    body = list(checksummed[2:])
    letters = [i for i, c in enumerate(body) if c.isalpha()]
    rng.shuffle(letters)
    # EIP-55 allows exactly one mixed-case spelling; any other mixed-case spelling has a wrong checksum.
    for i in letters:
        flipped = body.copy()
        flipped[i] = flipped[i].swapcase()
        candidate = "".join(flipped)
        if _is_mixed_case(candidate):
            return "0x" + candidate
    inverted = "".join(body).swapcase()  # e.g. "A..b" -> "a..B" when no single flip stays mixed-case
    if _is_mixed_case(inverted):
        return "0x" + inverted
    pos = rng.randrange(40)
    return "0x" + "".join(body[:pos]) + "g" + "".join(body[pos + 1 :])


# ---------------------------------------------------------------------------------------------------------
# Substitutions
# ---------------------------------------------------------------------------------------------------------


def _corrupt_checked(address: str, rng: random.Random, alphabet: str, broken: _Check, start: int = 0) -> str:
    """Replace one character (after ``start``) by another of ``alphabet`` until ``broken`` says it is broken."""
    for _ in range(_MAX_TRIES):
        pos = rng.randrange(start, len(address))
        replacement = rng.choice(alphabet.replace(address[pos], ""))
        candidate = address[:pos] + replacement + address[pos + 1 :]
        # A 4-byte checksum misses about one substitution in 2**32: check rather than assume.
        if broken(candidate):
            return candidate
    raise RuntimeError(f"could not corrupt {address!r}")  # pragma: no cover - probability ~2**-32000


def _corrupt_outside_alphabet(address: str, rng: random.Random, outside: str, start: int = 0) -> str:
    pos = rng.randrange(start, len(address))
    return address[:pos] + rng.choice(outside) + address[pos + 1 :]


# ---------------------------------------------------------------------------------------------------------
# Base58Check (Bitcoin and XRP alphabets) and TRON hex
# ---------------------------------------------------------------------------------------------------------


def _base58check_ok(text: str, alphabet: bytes) -> bool:
    try:
        base58.b58decode_check(text, alphabet=alphabet)
    except ValueError:
        return False
    return True


def _is_tron_hex(address: str) -> bool:
    body = address[2:] if address[:2] == "0x" else address
    return len(body) == 42 and body[:2] == "41" and all(c in "0123456789abcdefABCDEF" for c in body)


def _tron_raw(address: str) -> bytes:
    """The 21 bytes (0x41 + account id) of a TRON address in any spelling."""
    if _is_tron_hex(address):
        return bytes.fromhex(address[2:] if address[:2] == "0x" else address)
    return base58.b58decode_check(address)


def _tron_style(raw: bytes, style: str) -> str:
    if style == "base58":
        return base58.b58encode_check(raw).decode("ascii")
    if style == "hex":
        return raw.hex()
    if style == "hex-upper":
        return raw.hex().upper()
    if style == "0x-hex":
        return "0x" + raw.hex()
    raise ValueError(f"TRON style must be one of {TRON_STYLES}, got {style!r}")


# ---------------------------------------------------------------------------------------------------------
# bech32 / bech32m (BIP-173 / BIP-350 reference algorithm, deliberately not shared with the decoder)
# ---------------------------------------------------------------------------------------------------------


def _hrp(net: Network) -> str:
    hrp = net.segwit_hrp or net.bech32_hrp
    if hrp is None:
        raise ValueError(f"{net.name} has no bech32 addresses")
    return hrp


def _known_hrps() -> set[str]:
    return {
        hrp
        for name in known_networks()
        if (hrp := resolve_network(name).segwit_hrp or resolve_network(name).bech32_hrp) is not None
    } | {"tex", "zs", "u"}


def _bech32_polymod(values: list[int]) -> int:
    generator = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            chk ^= generator[i] if ((top >> i) & 1) else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(x) >> 5 for x in hrp] + [0] + [ord(x) & 31 for x in hrp]


def _to_5bit(data: bytes) -> list[int]:
    acc = bits = 0
    out: list[int] = []
    for byte in data:
        acc = (acc << 8) | byte
        bits += 8
        while bits >= 5:
            bits -= 5
            out.append((acc >> bits) & 31)
    if bits:
        out.append((acc << (5 - bits)) & 31)
    return out


def _bech32_encode(hrp: str, data: list[int], const: int) -> str:
    polymod = _bech32_polymod([*_hrp_expand(hrp), *data, 0, 0, 0, 0, 0, 0]) ^ const
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_BECH32_CHARSET[d] for d in data + checksum)


def segwit_address(hrp: str, witness_version: int, program: bytes) -> str:
    """Encode a segwit address: bech32 for witness version 0, bech32m for 1..16 (BIP-350)."""
    const = _BECH32_CONST if witness_version == 0 else _BECH32M_CONST
    return _bech32_encode(hrp, [witness_version, *_to_5bit(program)], const)


def _bech32_style(address: str, style: str | None) -> str:
    if style is None or style == "lower":
        return address
    if style == "upper":
        return address.upper()
    raise ValueError(f"bech32 style must be one of {BECH32_STYLES}, got {style!r}")


def _bech32_checksum_ok(address: str) -> bool:
    lower = address.lower()
    sep = lower.rfind("1")
    values = [_BECH32_CHARSET.find(c) for c in lower[sep + 1 :]]
    return -1 not in values and _bech32_polymod(_hrp_expand(lower[:sep]) + values) in (
        _BECH32_CONST,
        _BECH32M_CONST,
    )


def _corrupt_bech32(address: str, rng: random.Random) -> str:
    sep = address.rfind("1")
    upper = address.isupper()
    for _ in range(_MAX_TRIES):
        pos = rng.randrange(sep + 1, len(address))
        replacement = rng.choice(_BECH32_CHARSET.replace(address[pos].lower(), ""))
        if upper:
            replacement = replacement.upper()
        candidate = address[:pos] + replacement + address[pos + 1 :]
        # BIP-173: the BCH code detects every single substitution; checked anyway, for both checksum variants.
        if not _bech32_checksum_ok(candidate):
            return candidate
    raise RuntimeError(f"could not corrupt {address!r}")  # pragma: no cover - never happens (BIP-173)


# ---------------------------------------------------------------------------------------------------------
# CashAddr (spec's reference PolyMod, deliberately not shared with the decoder)
# ---------------------------------------------------------------------------------------------------------


def _cashaddr_polymod(values: list[int]) -> int:
    # https://github.com/bitcoincashorg/bitcoincash.org/blob/master/spec/cashaddr.md, "Checksum".
    c = 1
    for d in values:
        c0 = c >> 35
        c = ((c & 0x07FFFFFFFF) << 5) ^ d
        if c0 & 0x01:
            c ^= 0x98F2BC8E61
        if c0 & 0x02:
            c ^= 0x79B76D99E2
        if c0 & 0x04:
            c ^= 0xF33E5FB3C4
        if c0 & 0x08:
            c ^= 0xAE2EABE2A8
        if c0 & 0x10:
            c ^= 0x1E4F43E470
    return c ^ 1


def _cashaddr_prefix_values(prefix: str) -> list[int]:
    return [ord(c) & 31 for c in prefix] + [0]


def cashaddr_address(type_bits: int, hash_bytes: bytes, prefix: str = _CASHADDR_PREFIX) -> str:
    """Encode a CashAddr address ``prefix:payload`` (lowercase) of an address type and hash."""
    size_bits = _CASHADDR_HASH_SIZES.index(len(hash_bytes))
    data = _to_5bit(bytes([type_bits << 3 | size_bits]) + hash_bytes)
    polymod = _cashaddr_polymod(_cashaddr_prefix_values(prefix) + data + [0] * 8)
    checksum = [(polymod >> 5 * (7 - i)) & 31 for i in range(8)]
    return prefix + ":" + "".join(_BECH32_CHARSET[d] for d in data + checksum)


def _cashaddr_parts(address: str) -> tuple[bool, bool, list[int]] | None:
    """(has prefix, is uppercase, 5-bit payload values) of a "bitcoincash" CashAddr with a valid checksum."""
    lower = address.lower()
    if address not in (lower, address.upper()):
        return None
    prefix, colon, payload = lower.rpartition(":")
    if colon and prefix != _CASHADDR_PREFIX:
        return None
    values = [_BECH32_CHARSET.find(c) for c in payload]
    if len(values) < 10 or -1 in values or _cashaddr_polymod(_cashaddr_prefix_values(_CASHADDR_PREFIX) + values):
        return None
    return bool(colon), address != lower, values


def _cashaddr_style(type_bits: int, hash_bytes: bytes, style: str) -> str:
    if style == "legacy":
        if type_bits not in _LEGACY_VERSIONS or len(hash_bytes) != 20:
            raise ValueError("only P2PKH and P2SH with a 160-bit hash have a legacy form")
        return base58.b58encode_check(_LEGACY_VERSIONS[type_bits] + hash_bytes).decode("ascii")
    address = cashaddr_address(type_bits, hash_bytes)
    if style == "lower":
        return address
    if style == "upper":
        return address.upper()
    if style == "bare-lower":
        return address.partition(":")[2]
    if style == "bare-upper":
        return address.partition(":")[2].upper()
    raise ValueError(f"CashAddr style must be one of {CASHADDR_STYLES}, got {style!r}")


def _cashaddr_variants(address: str) -> list[str]:
    parts = _cashaddr_parts(address)
    if parts is None:  # legacy form
        raw = base58.b58decode_check(address)
        type_bits, hash_bytes = (0 if raw[:1] == b"\x00" else 1), raw[1:]
    else:
        groups = parts[2][:-8]
        value = int("".join(f"{g:05b}" for g in groups), 2) >> (len(groups) * 5 % 8)
        data = value.to_bytes(len(groups) * 5 // 8, "big")
        type_bits, hash_bytes = data[0] >> 3, data[1:]
    plain = type_bits & 1  # token-aware types 2/3 are P2PKH/P2SH
    variants = [address]
    for spelling_type in (plain, plain + 2):
        variants.extend(_cashaddr_style(spelling_type, hash_bytes, s) for s in CASHADDR_STYLES if s != "legacy")
    if len(hash_bytes) == 20:
        variants.append(_cashaddr_style(plain, hash_bytes, "legacy"))
    return variants


def _corrupt_cashaddr(address: str, rng: random.Random) -> str:
    upper = address.isupper()
    charset = _BECH32_CHARSET.upper() if upper else _BECH32_CHARSET
    return _corrupt_checked(
        address, rng, charset, lambda text: _cashaddr_parts(text) is None, start=address.rfind(":") + 1
    )


# ---------------------------------------------------------------------------------------------------------
# Monero (block-wise Base58, monero-project/monero src/common/base58.cpp; Keccak-256 checksum)
# ---------------------------------------------------------------------------------------------------------


def _keccak4(data: bytes) -> bytes:
    return keccak.new(digest_bits=256, data=data).digest()[:4]


def monero_address(tag: int, spend_key: bytes, view_key: bytes, payment_id: bytes = b"") -> str:
    """Encode a Monero address: network tag, public spend and view keys, [payment ID], Keccak-256 checksum."""
    raw = bytes([tag]) + spend_key + view_key + payment_id
    raw += _keccak4(raw)
    blocks = [raw[i : i + 8] for i in range(0, len(raw), 8)]
    # Each 8-byte block is written as exactly 11 characters, a shorter last block as _XMR_ENCODED_SIZES[n].
    return "".join(
        base58.b58encode_int(int.from_bytes(block, "big")).decode("ascii").rjust(_XMR_ENCODED_SIZES[len(block)], "1")
        for block in blocks
    )


def _monero_decode(address: str) -> bytes | None:
    """The bytes of a Monero-Base58 string of address length with a valid checksum, or None."""
    if len(address) not in (95, 106) or any(c not in _B58_ALPHABET for c in address):
        return None
    raw = b""
    for start in range(0, len(address), 11):
        chunk = address[start : start + 11]
        size = _XMR_ENCODED_SIZES.index(len(chunk))
        value = base58.b58decode_int(chunk)
        if value >= 1 << (8 * size):
            return None
        raw += value.to_bytes(size, "big")
    return raw if _keccak4(raw[:-4]) == raw[-4:] else None


def _monero_ok_except_checksum(text: str) -> bool:
    """Decodes block by block (no overflow) but the checksum fails."""
    raw = b""
    for start in range(0, len(text), 11):
        chunk = text[start : start + 11]
        size = _XMR_ENCODED_SIZES.index(len(chunk))
        value = base58.b58decode_int(chunk)
        if value >= 1 << (8 * size):
            return False
        raw += value.to_bytes(size, "big")
    return _keccak4(raw[:-4]) != raw[-4:]


# ---------------------------------------------------------------------------------------------------------
# Stellar StrKey (SEP-23) with the standard library's base32 and CRC16-XModem (binascii.crc_hqx)
# ---------------------------------------------------------------------------------------------------------


def _strkey_crc(data: bytes) -> bytes:
    return binascii.crc_hqx(data, 0).to_bytes(2, "little")


def stellar_address(public_key: bytes, muxed_id: int | None = None) -> str:
    """Encode a Stellar account "G..." or, with ``muxed_id``, a muxed account "M..." (SEP-23)."""
    if muxed_id is None:
        raw = bytes([_STRKEY_ACCOUNT]) + public_key
    else:
        raw = bytes([_STRKEY_MUXED]) + public_key + muxed_id.to_bytes(8, "big")
    return base64.b32encode(raw + _strkey_crc(raw)).decode("ascii").rstrip("=")


def _strkey_decode(address: str) -> bytes:
    return base64.b32decode(address + "=" * (-len(address) % 8))


def _strkey_ok(address: str) -> bool:
    if len(address) not in (56, 69) or address[0] not in "GM" or any(c not in _STRKEY_ALPHABET for c in address):
        return False
    raw = _strkey_decode(address)
    return _strkey_crc(raw[:-2]) == raw[-2:]


def _strkey_ok_except_checksum(text: str) -> bool:
    """Canonical base32 (the unused trailing bits are zero: it re-encodes to itself) but the checksum fails."""
    raw = _strkey_decode(text)
    canonical = base64.b32encode(raw).decode("ascii").rstrip("=") == text
    return canonical and _strkey_crc(raw[:-2]) != raw[-2:]


# How corrupt() recognizes a format, most specific first (EVM before TRON hex's "0x41...", checksummed formats
# before Base58Check, whose alphabet they share or overlap).
_CORRUPTERS: Final[tuple[tuple[_Check, Callable[[str, random.Random], str]], ...]] = (
    (_is_evm, _corrupt_evm),
    (_is_tron_hex, _corrupt_tron_hex),
    (lambda address: _cashaddr_parts(address) is not None, _corrupt_cashaddr),
    (_is_bech32, _corrupt_bech32),
    (_strkey_ok, _corrupt_strkey),
    (lambda address: _monero_decode(address) is not None, _corrupt_monero),
    (_is_xrp, _corrupt_xrp),
    (lambda address: _base58check_ok(address, _BITCOIN), _corrupt_base58),
)
