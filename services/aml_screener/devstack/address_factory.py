"""Deterministic synthetic addresses for the devstack event generator, tests and benchmarks.

Everything here is driven by a caller-supplied :class:`random.Random`, so a seed reproduces the same
addresses. The network parameters (version bytes, HRPs) come from the table in
:mod:`aml_screener.screening.addresses`, but the encoders are independent of its decoders: Base58Check is
produced with the ``base58`` package and bech32/bech32m with the BIP-350 reference algorithm below, so the
generator can serve as a check on the normalizer rather than mirroring its bugs.
"""

from __future__ import annotations

import random
from typing import Final

import base58

from aml_screener.screening.addresses import (
    AddressFormat,
    Network,
    known_networks,
    normalize,
    resolve_network,
    to_checksum_address,
)

__all__ = [
    "BECH32_STYLES",
    "EVM_STYLES",
    "SEGWIT_KINDS",
    "case_variants",
    "corrupt",
    "kinds_for",
    "random_address",
    "segwit_address",
]

#: Spellings of an EVM address: all-lowercase, uppercase body (lowercase "0x"), EIP-55 checksummed.
EVM_STYLES: Final = ("lower", "upper", "checksum")
#: Spellings of a bech32 address (BIP-173 allows either case, never mixed).
BECH32_STYLES: Final = ("lower", "upper")
#: Segwit kinds and their (witness version, program length).
SEGWIT_KINDS: Final[dict[str, tuple[int, int]]] = {"p2wpkh": (0, 20), "p2wsh": (0, 32), "p2tr": (1, 32)}

_B58_ALPHABET: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BECH32_CHARSET: Final = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_CONST: Final = 1
_BECH32M_CONST: Final = 0x2BC830A3
_MAX_TRIES: Final = 1000


def kinds_for(network: str) -> tuple[str, ...]:
    """The address kinds :func:`random_address` can produce for ``network``."""
    net = resolve_network(network)
    kinds: list[str] = []
    if AddressFormat.EVM_HEX in net.formats:
        kinds.append("evm")
    if AddressFormat.BASE58CHECK in net.formats:
        kinds.extend(dict.fromkeys(kind for _version, kind in net.base58_versions))
    if AddressFormat.SEGWIT in net.formats:
        kinds.extend(SEGWIT_KINDS)
    return tuple(kinds)


def random_address(network: str, rng: random.Random, *, kind: str | None = None, style: str | None = None) -> str:
    """A valid random address for ``network``.

    ``kind`` picks the address type (see :func:`kinds_for`; random if omitted). ``style`` picks the spelling:
    one of :data:`EVM_STYLES` for EVM (random if omitted), one of :data:`BECH32_STYLES` for segwit (lowercase
    if omitted); Base58 has exactly one spelling and accepts no style.
    """
    net = resolve_network(network)
    kinds = kinds_for(net.name)
    if kind is None:
        kind = rng.choice(kinds)
    elif kind not in kinds:
        raise ValueError(f"{net.name} has no address kind {kind!r}; choose from {kinds}")
    if kind == "evm":
        return _evm_address(rng.randbytes(20).hex(), style if style is not None else rng.choice(EVM_STYLES))
    if kind in SEGWIT_KINDS:
        witness_version, length = SEGWIT_KINDS[kind]
        address = segwit_address(_hrp(net), witness_version, rng.randbytes(length))
        if style is None or style == "lower":
            return address
        if style == "upper":
            return address.upper()
        raise ValueError(f"bech32 style must be one of {BECH32_STYLES}, got {style!r}")
    if style is not None:
        raise ValueError("Base58 addresses have a single spelling; style must be None")
    version_bytes = rng.choice([v for v, k in net.base58_versions if k == kind])
    return base58.b58encode_check(version_bytes + rng.randbytes(20)).decode("ascii")


def case_variants(network: str, address: str) -> list[str]:
    """Distinct spellings of a valid ``address`` that denote the same address (the same lookup key).

    EVM: lowercase, uppercase body (lowercase "0x"), EIP-55. Bech32: lowercase and uppercase.
    Base58 is case-sensitive, so only the address itself.
    """
    normalized = normalize(network, address)
    if normalized.kind == "evm":
        body = normalized.display[2:].lower()
        variants = ["0x" + body, "0x" + body.upper(), normalized.display]
    elif normalized.kind in SEGWIT_KINDS or normalized.kind == "segwit":
        variants = [normalized.display, normalized.display.upper()]
    else:
        variants = [address]
    return list(dict.fromkeys(variants))


def corrupt(address: str, rng: random.Random) -> str:
    """An invalid variant of a valid ``address`` that a careless copy could produce.

    Base58Check and bech32: one character replaced by another character of the same alphabet, chosen so the
    checksum fails. EVM: a mixed-case spelling that is not the EIP-55 one (wrong checksum); for the rare body
    with at most one letter, where no such spelling exists, a non-hex character instead.
    """
    if address[:2] == "0x" and len(address) == 42:
        return _corrupt_evm(address, rng)
    sep = address.rfind("1")
    if (
        sep > 0
        and address[:sep].lower() in _known_hrps()
        and address in (address.lower(), address.upper())
        and _bech32_checksum_ok(address)  # not a Base58 string that merely starts like "LTC1..."
    ):
        return _corrupt_bech32(address, sep, rng)
    return _corrupt_base58(address, rng)


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
# Base58Check
# ---------------------------------------------------------------------------------------------------------


def _base58check_ok(text: str) -> bool:
    try:
        base58.b58decode_check(text)
    except ValueError:
        return False
    return True


def _corrupt_base58(address: str, rng: random.Random) -> str:
    for _ in range(_MAX_TRIES):
        pos = rng.randrange(len(address))
        replacement = rng.choice(_B58_ALPHABET.replace(address[pos], ""))
        candidate = address[:pos] + replacement + address[pos + 1 :]
        # A 4-byte checksum misses about one substitution in 2**32: check rather than assume.
        if not _base58check_ok(candidate):
            return candidate
    raise RuntimeError(f"could not corrupt {address!r}")  # pragma: no cover - probability ~2**-32000


# ---------------------------------------------------------------------------------------------------------
# bech32 / bech32m (BIP-173 / BIP-350 reference algorithm, deliberately not shared with the decoder)
# ---------------------------------------------------------------------------------------------------------


def _hrp(net: Network) -> str:
    if net.segwit_hrp is None:
        raise ValueError(f"{net.name} has no segwit addresses")
    return net.segwit_hrp


def _known_hrps() -> set[str]:
    return {hrp for name in known_networks() if (hrp := resolve_network(name).segwit_hrp) is not None}


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


def segwit_address(hrp: str, witness_version: int, program: bytes) -> str:
    """Encode a segwit address: bech32 for witness version 0, bech32m for 1..16 (BIP-350)."""
    const = _BECH32_CONST if witness_version == 0 else _BECH32M_CONST
    data = [witness_version, *_to_5bit(program)]
    polymod = _bech32_polymod([*_hrp_expand(hrp), *data, 0, 0, 0, 0, 0, 0]) ^ const
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_BECH32_CHARSET[d] for d in data + checksum)


def _bech32_checksum_ok(address: str) -> bool:
    lower = address.lower()
    sep = lower.rfind("1")
    values = [_BECH32_CHARSET.find(c) for c in lower[sep + 1 :]]
    return -1 not in values and _bech32_polymod(_hrp_expand(lower[:sep]) + values) in (
        _BECH32_CONST,
        _BECH32M_CONST,
    )


def _corrupt_bech32(address: str, sep: int, rng: random.Random) -> str:
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
