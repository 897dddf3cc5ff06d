"""The synthetic address factory: what it generates must be valid, what it corrupts must be rejected."""

from __future__ import annotations

import random

import base58
import bech32
import pytest

from aml_screener.devstack.address_factory import (
    BECH32_STYLES,
    CASHADDR_KINDS,
    CASHADDR_STYLES,
    EVM_STYLES,
    MONERO_KINDS,
    SEGWIT_KINDS,
    TRON_STYLES,
    case_variants,
    cashaddr_address,
    corrupt,
    kinds_for,
    monero_address,
    random_address,
    segwit_address,
    stellar_address,
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
# Formats without a checksum: corrupt() uses a character from outside the alphabet.
NO_CHECKSUM = {("solana", "account"), ("tron", "tron")}


def styles_for(network: str, kind: str) -> tuple[str | None, ...]:
    if kind == "evm":
        return (None, *EVM_STYLES)
    if kind in SEGWIT_KINDS or network == "bnb-beacon-chain":
        return (None, *BECH32_STYLES)
    if network == "bitcoin-cash":
        legacy = CASHADDR_KINDS[kind] in ((0, 20), (1, 20))
        return (None, *(s for s in CASHADDR_STYLES if legacy or s != "legacy"))
    if network == "tron":
        return (None, *TRON_STYLES)
    return (None,)


def test_every_network_has_generators_for_its_address_kinds() -> None:
    assert kinds_for("bitcoin") == ("p2pkh", "p2sh", "p2wpkh", "p2wsh", "p2tr")
    assert kinds_for("litecoin") == ("p2pkh", "p2sh", "p2wpkh", "p2wsh", "p2tr")
    assert kinds_for("tron") == ("tron",)
    assert kinds_for("zcash") == ("p2pkh", "p2sh", "tex", "sapling", "unified")
    assert kinds_for("bitcoin-cash") == tuple(CASHADDR_KINDS)
    assert kinds_for("bnb-beacon-chain") == ("bnb",)
    assert kinds_for("xrp-ledger") == ("classic", "x-address")
    assert kinds_for("monero") == tuple(MONERO_KINDS) == ("standard", "integrated", "subaddress")
    assert kinds_for("solana") == ("account",)
    assert kinds_for("stellar") == ("account", "muxed")
    assert all(kinds_for(n) == ("evm",) for n in known_networks() if resolve_network(n).family is ChainFamily.EVM)
    assert all(kinds_for(n) for n in known_networks())


@pytest.mark.parametrize(("network", "kind"), CASES)
def test_generated_addresses_normalize_to_the_requested_kind_and_style(network: str, kind: str) -> None:
    for style in styles_for(network, kind):
        rng = random.Random(f"{network}/{kind}/{style}")
        for _ in SEEDS:
            address = random_address(network, rng, kind=kind, style=style)
            result = normalize(network, address)
            assert result.kind == kind
            assert result.family is resolve_network(network).family
            if style == "lower":
                assert address == address.lower()
            elif style == "upper":
                assert address[2:] == address[2:].upper() and (address[:2] == "0x" or address == address.upper())
            elif style == "checksum":
                assert address == result.display == to_checksum_address(address)
            elif style in ("bare-lower", "bare-upper"):
                assert ":" not in address and address[0] in "qpzrQPZR"
                assert address == (address.lower() if style == "bare-lower" else address.upper())
            elif style == "legacy":
                assert address[0] in "13" and len(address) <= 34
            elif style in ("hex", "hex-upper", "0x-hex"):
                assert address.removeprefix("0x")[:2] == "41" and len(address.removeprefix("0x")) == 42
            elif style in (None, "base58") and network == "tron":
                assert address.startswith("T") and len(address) == 34
            elif style is None and network == "bitcoin-cash":
                assert address == result.display and address.startswith("bitcoincash:")


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
    with pytest.raises(ValueError, match="single spelling"):
        random_address("monero", rng, style="lower")
    with pytest.raises(ValueError, match="legacy form"):
        random_address("bitcoin-cash", rng, kind="p2sh32", style="legacy")
    with pytest.raises(ValueError, match="legacy form"):
        random_address("bitcoin-cash", rng, kind="p2pkh-tokens", style="legacy")
    with pytest.raises(ValueError, match="CashAddr style"):
        random_address("bitcoin-cash", rng, kind="p2pkh", style="checksum")
    with pytest.raises(ValueError, match="TRON style"):
        random_address("tron", rng, style="upper")
    with pytest.raises(ValueError, match="no address kind"):
        random_address("bitcoin-cash", rng, kind="p2wpkh")


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
        elif kind in SEGWIT_KINDS or kind == "bnb":
            assert variants == [address.lower(), address.upper()]
        elif network == "bitcoin-cash":
            # Four CashAddr spellings each of the plain and the token-aware type, and the legacy form if any.
            has_legacy = CASHADDR_KINDS[kind][1] == 20
            assert len(variants) == 8 + has_legacy
            assert address in variants and variants[0] == address
            assert sum(v.startswith(("1", "3")) for v in variants) == has_legacy
        elif network == "tron":
            raw = base58.b58decode_check(address)
            assert variants == [address, raw.hex(), raw.hex().upper(), "0x" + raw.hex()]
        elif kind in ("x-address", "integrated", "muxed"):
            assert variants[0] == address and len(variants) == 2
            assert normalize(network, variants[1]).kind in ("classic", "standard", "account")
        elif network == "litecoin" and kind == "p2sh":
            # the "M..." and the legacy "3..." form of one script hash
            assert variants[0] == address and sorted(v[0] for v in variants) == ["3", "M"]
        elif network == "zcash" and kind in ("p2pkh", "tex"):
            # a t1 address and the TEX address of its hash (ZIP-320), TEX in either case
            assert variants[0] == address and len(variants) == 3
            assert sum(v.startswith("t1") for v in variants) == 1
        elif network == "zcash" and kind in ("sapling", "unified"):
            assert variants == [address.lower(), address.upper()]
        else:
            assert variants == [address]


def test_case_variants_of_an_all_digit_evm_body_collapse() -> None:
    assert case_variants("ethereum", "0x" + "1" * 40) == ["0x" + "1" * 40]


@pytest.mark.parametrize(("network", "kind"), CASES)
def test_corrupted_addresses_are_rejected(network: str, kind: str) -> None:
    rng = random.Random(f"corrupt/{network}/{kind}")
    for _ in SEEDS:
        for style in styles_for(network, kind):
            address = random_address(network, rng, kind=kind, style=style)
            broken = corrupt(address, rng)
            assert len(broken) == len(address) and broken != address
            with pytest.raises(InvalidAddress) as info:
                normalize(network, broken)
            if kind == "evm":
                assert info.value.reason == "bad_eip55_checksum"
                assert broken.lower() == address.lower()  # only the case changed
                continue
            assert sum(a != b for a, b in zip(address, broken, strict=True)) == 1
            if (network, kind) in NO_CHECKSUM and (network == "solana" or style not in (None, "base58")):
                assert info.value.reason == "bad_characters"  # no checksum: any in-alphabet change is valid
            else:
                assert info.value.reason == "bad_checksum"
                # Same case as the original: a careless copy does not change the case.
                assert broken.isupper() == address.isupper() and broken.islower() == address.islower()


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


# ---------------------------------------------------------------------------------------------------------
# Encoders against published vectors (independent of the normalizer)
# ---------------------------------------------------------------------------------------------------------


def test_cashaddr_encoder_matches_the_spec() -> None:
    # https://github.com/bitcoincashorg/bitcoincash.org/blob/master/spec/cashaddr.md, "Larger test vectors".
    hash20 = bytes.fromhex("F5BF48B397DAE70BE82B3CCA4793F8EB2B6CDAC9")
    assert cashaddr_address(0, hash20) == "bitcoincash:qr6m7j9njldwwzlg9v7v53unlr4jkmx6eylep8ekg2"
    assert cashaddr_address(1, hash20, "bchtest") == "bchtest:pr6m7j9njldwwzlg9v7v53unlr4jkmx6eyvwc0uz5t"
    hash32 = bytes.fromhex("3173EF6623C6B48FFD1A3DCC0CC6489B0A07BB47A37F47CFEF4FE69DE825C060")
    assert cashaddr_address(1, hash32, "pref") == "pref:pvch8mmxy0rtfrlarg7ucrxxfzds5pamg73h7370aa87d80gyhqxq4k9m7qf9"
    # Bitcoin Cash Node MR 1596: the token-aware form of the first vector.
    assert cashaddr_address(2, hash20) == "bitcoincash:zr6m7j9njldwwzlg9v7v53unlr4jkmx6eycnjehshe"


def test_monero_and_stellar_encoders_match_published_vectors() -> None:
    # monerodocs.org: the standard address embedded in its integrated-address example (keys read with base58).
    standard = "4AdUndXHHZ6cfufTMvppY6JwXNouMBzSkbLYfpAV5Usx3skxNgYeYTRj5UzqtReoS44qo9mtmXCqY45DJ852K5Jv2684Rge"
    sizes = (0, 2, 3, 5, 6, 7, 9, 10, 11)
    raw = b"".join(
        base58.b58decode_int(standard[i : i + 11]).to_bytes(sizes.index(len(standard[i : i + 11])), "big")
        for i in range(0, 95, 11)
    )
    assert monero_address(18, raw[1:33], raw[33:65]) == standard
    # SEP-23 valid test cases.
    key = bytes.fromhex("3f0c34bf93ad0d9971d04ccc90f705511c838aad9734a4a2fb0d7a03fc7fe89a")
    assert stellar_address(key) == "GA7QYNF7SOWQ3GLR2BGMZEHXAVIRZA4KVWLTJJFC7MGXUA74P7UJVSGZ"
    assert stellar_address(key, 0) == "MA7QYNF7SOWQ3GLR2BGMZEHXAVIRZA4KVWLTJJFC7MGXUA74P7UJUAAAAAAAAAAAACJUQ"


def test_xrp_addresses_use_the_ripple_alphabet() -> None:
    rng = random.Random(9)
    for _ in range(50):
        classic = random_address("xrp-ledger", rng, kind="classic")
        assert classic.startswith("r")
        assert len(base58.b58decode_check(classic, alphabet=base58.RIPPLE_ALPHABET)) == 21
        x_address = random_address("xrp-ledger", rng, kind="x-address")
        assert x_address.startswith("X") and len(x_address) == 47


def test_bnb_addresses_match_the_bech32_package() -> None:
    rng = random.Random(4)
    for _ in range(50):
        address = random_address("bnb-beacon-chain", rng)
        hrp, data = bech32.bech32_decode(address)
        assert hrp == "bnb" and data is not None
        assert len(bytes(bech32.convertbits(data, 5, 8, False) or [])) == 20
