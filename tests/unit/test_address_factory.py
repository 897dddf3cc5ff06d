"""The synthetic address factory: what it generates must be valid, what it corrupts must be rejected."""

from __future__ import annotations

import random

import base58
import bech32
import pytest

from aml_screener.devstack.address_factory import (
    BECH32_STYLES,
    EVM_STYLES,
    SEGWIT_KINDS,
    case_variants,
    corrupt,
    kinds_for,
    random_address,
    segwit_address,
)
from aml_screener.screening.addresses import (
    ChainFamily,
    InvalidAddress,
    known_networks,
    normalize,
    resolve_network,
    to_checksum_address,
)

SEEDS = range(40)
B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
CASES = [(network, kind) for network in known_networks() for kind in kinds_for(network)]


def styles_for(kind: str) -> tuple[str | None, ...]:
    if kind == "evm":
        return (None, *EVM_STYLES)
    if kind in SEGWIT_KINDS:
        return (None, *BECH32_STYLES)
    return (None,)


def test_every_network_has_generators_for_its_address_kinds() -> None:
    assert kinds_for("bitcoin") == ("p2pkh", "p2sh", "p2wpkh", "p2wsh", "p2tr")
    assert kinds_for("litecoin") == ("p2pkh", "p2sh", "p2wpkh", "p2wsh", "p2tr")
    assert kinds_for("tron") == ("tron",)
    assert kinds_for("zcash") == ("p2pkh", "p2sh")
    assert all(kinds_for(n) == ("evm",) for n in known_networks() if resolve_network(n).family is ChainFamily.EVM)
    assert all(kinds_for(n) for n in known_networks())


@pytest.mark.parametrize(("network", "kind"), CASES)
def test_generated_addresses_normalize_to_the_requested_kind_and_style(network: str, kind: str) -> None:
    for style in styles_for(kind):
        rng = random.Random(f"{network}/{kind}/{style}")
        for _ in SEEDS:
            address = random_address(network, rng, kind=kind, style=style)
            result = normalize(network, address)
            assert result.kind == kind
            assert result.family is resolve_network(network).family
            if style == "lower":
                assert address == address.lower()
            elif style == "upper":
                assert address[2:] == address[2:].upper() and address[:2] in ("0x", "BC", "LT")
            elif style == "checksum":
                assert address == result.display == to_checksum_address(address)


def test_evm_style_is_random_when_not_given() -> None:
    rng = random.Random(7)
    addresses = [random_address("ethereum", rng) for _ in range(60)]
    assert any(a == a.lower() for a in addresses)
    assert any(a[2:] == a[2:].upper() for a in addresses)
    assert any(a == to_checksum_address(a) and a != a.lower() and a[2:] != a[2:].upper() for a in addresses)


def test_generation_is_deterministic_per_seed() -> None:
    first = [random_address(n, random.Random(42)) for n in known_networks()]
    again = [random_address(n, random.Random(42)) for n in known_networks()]
    other = [random_address(n, random.Random(43)) for n in known_networks()]
    assert first == again
    assert all(a != b for a, b in zip(first, other, strict=True))


def test_tron_addresses_look_like_tron_addresses() -> None:
    rng = random.Random(1)
    for _ in range(200):
        address = random_address("tron", rng)
        assert address.startswith("T") and len(address) == 34


def test_bad_kind_or_style_is_refused() -> None:
    rng = random.Random(0)
    with pytest.raises(ValueError, match="no address kind"):
        random_address("dogecoin", rng, kind="p2wpkh")
    with pytest.raises(ValueError, match="style"):
        random_address("ethereum", rng, style="mixed")
    with pytest.raises(ValueError, match="style"):
        random_address("bitcoin", rng, kind="p2tr", style="checksum")
    with pytest.raises(ValueError, match="single spelling"):
        random_address("bitcoin", rng, kind="p2pkh", style="upper")


@pytest.mark.parametrize(("network", "kind"), CASES)
def test_case_variants_all_map_to_one_key(network: str, kind: str) -> None:
    rng = random.Random(f"variants/{network}/{kind}")
    for _ in SEEDS:
        address = random_address(network, rng, kind=kind)
        variants = case_variants(network, address)
        assert address in variants
        assert len(set(variants)) == len(variants)
        assert len({normalize(network, v).key for v in variants}) == 1
        if kind == "evm":
            body = address[2:].lower()
            spellings = ["0x" + body, "0x" + body.upper(), to_checksum_address(body)]
            assert variants == list(dict.fromkeys(spellings))  # EIP-55 may coincide with a single-case one
        elif kind in SEGWIT_KINDS:
            assert variants == [address.lower(), address.upper()]
        else:
            assert variants == [address]


def test_case_variants_of_an_all_digit_evm_body_collapse() -> None:
    assert case_variants("ethereum", "0x" + "1" * 40) == ["0x" + "1" * 40]


@pytest.mark.parametrize(("network", "kind"), CASES)
def test_corrupted_addresses_are_rejected(network: str, kind: str) -> None:
    rng = random.Random(f"corrupt/{network}/{kind}")
    for _ in SEEDS:
        for style in styles_for(kind):
            address = random_address(network, rng, kind=kind, style=style)
            broken = corrupt(address, rng)
            assert len(broken) == len(address) and broken != address
            with pytest.raises(InvalidAddress) as info:
                normalize(network, broken)
            if kind == "evm":
                assert info.value.reason == "bad_eip55_checksum"
                assert broken.lower() == address.lower()  # only the case changed
            else:
                assert info.value.reason == "bad_checksum"
                assert sum(a != b for a, b in zip(address, broken, strict=True)) == 1


def test_corrupt_evm_handles_bodies_with_few_letters() -> None:
    rng = random.Random(3)
    two_letters_mixed = to_checksum_address("0x" + "1" * 38 + "ab")
    for address in (two_letters_mixed, "0x" + "1" * 39 + "a", "0x" + "1" * 40):
        broken = corrupt(address, rng)
        with pytest.raises(InvalidAddress) as info:
            normalize("ethereum", broken)
        assert info.value.reason in {"bad_eip55_checksum", "bad_characters"}


def test_segwit_encoder_matches_the_bech32_package_and_bip350() -> None:
    rng = random.Random(5)
    for size in (20, 32):
        for _ in range(50):
            program = rng.randbytes(size)
            assert segwit_address("bc", 0, program) == bech32.encode("bc", 0, program)
            assert segwit_address("ltc", 0, program) == bech32.encode("ltc", 0, program)
    # BIP-350 test vector: witness v1 program = the secp256k1 generator's x coordinate.
    g_x = bytes.fromhex("79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
    assert segwit_address("bc", 1, g_x) == "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0"


def test_corrupt_treats_a_base58_lookalike_of_bech32_as_base58() -> None:
    lookalike = "LTC1222222222222222222222223RW9H4Q"  # valid Litecoin Base58, starts like "ltc1"
    rng = random.Random(11)
    for _ in range(20):
        broken = corrupt(lookalike, rng)
        assert sum(a != b for a, b in zip(lookalike, broken, strict=True)) == 1
        assert set(broken) <= set(B58_ALPHABET)  # substituted from the Base58 alphabet, not bech32's
        with pytest.raises(ValueError, match="checksum"):
            base58.b58decode_check(broken)
        with pytest.raises(InvalidAddress):
            normalize("litecoin", broken)
