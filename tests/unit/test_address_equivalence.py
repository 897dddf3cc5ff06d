"""Every spelling of one destination is one key, for every chain, and the list loader and the screener agree.

The red-team finding behind this file: Litecoin P2SH was keyed by its spelling, so the legacy "3..." form
(version 0x05) and the current "M..." form (0x32) of one script hash got different keys, and a withdrawal to
either spelling of an OFAC-listed Litecoin address listed in the other one was decided CLEAR. Spellings here come
from the devstack address factory, whose encoders are independent of the normalizer's decoders (the `base58`
package, the BIP-350 reference algorithm, the CashAddr spec's checksum), and from official test vectors.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import base58
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aml_screener.devstack.address_factory import case_variants, kinds_for, random_address, unified_address
from aml_screener.screening.addresses import (
    ChainFamily,
    InvalidAddress,
    f4jumble,
    f4jumble_inv,
    known_networks,
    networks_for_asset,
    normalize,
    normalize_key,
    normalize_listed_key,
    resolve_network,
)

ZCASH_VECTORS = Path(__file__).resolve().parents[1] / "data" / "zcash"
# The OFAC-listed Litecoin address of the red-team finding and the legacy spelling of the same script hash.
OFAC_LTC_M = "M8yFL6SFC6TreATegTyuSYkDfDRbisdpT3"
SAME_SCRIPT_3 = "32m72D2HEycRqfBkaazZcuVpLWq9k3sYdt"
ASSETS = ("XBT", "ETH", "USDT", "USDC", "TRX", "LTC", "BCH", "BSV", "BTG", "DASH", "ZEC", "XVG", "ETC", "ARB", "BSC",
          "BNB", "DOGE", "XRP", "XMR", "SOL", "XLM")  # fmt: skip


def vectors(name: str) -> list[list[object]]:
    rows: list[list[object]] = json.loads((ZCASH_VECTORS / name).read_text())
    return rows[2:]  # a source line and a header line come first


# --------------------------------------------------------------------------------------------------------
# Litecoin P2SH: the bypass
# --------------------------------------------------------------------------------------------------------


def test_the_two_litecoin_p2sh_spellings_of_the_red_team_case_are_one_script_hash() -> None:
    # Independent check that the pair really is one destination: same hash, versions 0x32 and 0x05.
    assert base58.b58decode_check(OFAC_LTC_M)[1:] == base58.b58decode_check(SAME_SCRIPT_3)[1:]
    assert base58.b58decode_check(OFAC_LTC_M)[0] == 0x32 and base58.b58decode_check(SAME_SCRIPT_3)[0] == 0x05


@pytest.mark.parametrize(("listed", "typed"), [(OFAC_LTC_M, SAME_SCRIPT_3), (SAME_SCRIPT_3, OFAC_LTC_M)])
def test_a_litecoin_p2sh_listed_in_one_spelling_is_the_key_of_the_other(listed: str, typed: str) -> None:
    assert normalize_listed_key("LTC", listed) == normalize_key("litecoin", typed) == f"ltc:{OFAC_LTC_M}"


# --------------------------------------------------------------------------------------------------------
# Every chain: spellings of random payloads
# --------------------------------------------------------------------------------------------------------

NETWORK_KINDS = [(network, kind) for network in known_networks() for kind in kinds_for(network)]


def listing_assets(network: str) -> list[str]:
    """Tickers a list may file an address of ``network`` under (EVM: any EVM ticker; the key is shared)."""
    family = resolve_network(network).family
    return [
        asset
        for asset in ASSETS
        if any(resolve_network(candidate).family is family for candidate in networks_for_asset(asset))
    ]


@settings(max_examples=300, deadline=None)
@given(case=st.sampled_from(NETWORK_KINDS), seed=st.integers(0, 2**32))
def test_every_spelling_a_chain_allows_is_one_key_and_loader_and_screener_agree(
    case: tuple[str, str], seed: int
) -> None:
    network, kind = case
    address = random_address(network, random.Random(seed), kind=kind)
    spellings = case_variants(network, address)
    keys = {normalize_key(network, spelling) for spelling in spellings}
    assert len(keys) == 1, f"{network} {kind}: {spellings} -> {keys}"
    (key,) = keys
    assert {normalize(network, spelling).key for spelling in spellings} == {key}
    for asset in listing_assets(network):
        for spelling in spellings:
            try:
                listed = normalize_listed_key(asset, spelling)
            except InvalidAddress:
                continue  # e.g. a TRON address under ETH: the loader re-homes it (sources/base.py), not this
            if resolve_network(network).family.value == listed.partition(":")[0]:
                assert listed == key, f"list loader ({asset}) and screener ({network}) disagree on {spelling!r}"


@pytest.mark.parametrize("network", [n for n in known_networks() if resolve_network(n).family is ChainFamily.EVM])
def test_every_evm_network_shares_one_key_per_account(network: str) -> None:
    rng = random.Random(7)
    address = random_address("ethereum", rng, style="checksum")
    assert {normalize(network, spelling).key for spelling in case_variants("ethereum", address)} == {
        "evm:" + address.lower()
    }


# --------------------------------------------------------------------------------------------------------
# Zcash: TEX (ZIP-320) and unified addresses (ZIP-316), official vectors
# --------------------------------------------------------------------------------------------------------


def test_f4jumble_matches_the_official_vectors() -> None:
    rows = vectors("f4jumble.json")
    assert rows
    for normal, jumbled in rows:
        assert isinstance(normal, str) and isinstance(jumbled, str)
        assert f4jumble(bytes.fromhex(normal)).hex() == jumbled
        assert f4jumble_inv(bytes.fromhex(jumbled)).hex() == normal


def test_tex_addresses_are_keyed_by_their_t1_address() -> None:
    rows = vectors("zip_0320.json")
    assert len(rows) == 15
    for t_address, pubkey_hash, tex, *_ in rows:
        assert isinstance(t_address, str) and isinstance(tex, str) and isinstance(pubkey_hash, str)
        key = f"zec:{t_address}"
        assert normalize_key("zcash", tex) == normalize_key("zcash", tex.upper()) == normalize_key("zcash", t_address)
        assert normalize("zcash", tex).key == key
        assert normalize("zcash", tex).payload.hex() == pubkey_hash
        assert normalize_listed_key("ZEC", tex) == key


@pytest.mark.parametrize("name", ["unified_address.json", "unified_address_r2.json"])
def test_unified_addresses_decode_to_their_official_receivers(name: str) -> None:
    rows = vectors(name)
    assert len(rows) == 60
    for row in rows:
        p2pkh, p2sh, sapling, orchard = row[:4]
        address = row[6]
        assert isinstance(address, str)
        decoded = normalize("zcash", address)
        assert decoded.kind == "unified"
        assert decoded.key == f"zec:{address}" == normalize_key("zcash", address.upper())
        receivers = {receiver.kind: receiver for receiver in decoded.receivers}
        expected = {"p2pkh": p2pkh, "p2sh": p2sh, "sapling": sapling, "orchard": orchard}
        assert {kind: receiver.payload.hex() for kind, receiver in receivers.items()} == {
            kind: value for kind, value in expected.items() if value is not None
        }
        if p2pkh is not None:
            t1 = base58.b58encode_check(b"\x1c\xb8" + bytes.fromhex(str(p2pkh))).decode()
            assert receivers["p2pkh"].key == f"zec:{t1}"
        if p2sh is not None:
            t3 = base58.b58encode_check(b"\x1c\xbd" + bytes.fromhex(str(p2sh))).decode()
            assert receivers["p2sh"].key == f"zec:{t3}"
        if sapling is not None:  # the receiver as a Sapling address of its own, which normalizes to that key
            zs = receivers["sapling"].display
            assert zs.startswith("zs1") and normalize_key("zcash", zs) == receivers["sapling"].key
        if orchard is not None:  # no Orchard encoding exists: the Orchard-only unified address stands for it
            alone = normalize("zcash", receivers["orchard"].display)
            assert [r.payload.hex() for r in alone.receivers] == [orchard]


def test_a_unified_address_reencodes_to_itself() -> None:
    for row in vectors("unified_address.json"):
        p2pkh, p2sh, sapling, orchard, unknown_code, unknown = row[:6]
        items = {
            int(str(code)): bytes.fromhex(str(value))
            for code, value in ((0, p2pkh), (1, p2sh), (2, sapling), (3, orchard), (unknown_code, unknown))
            if value is not None and code is not None
        }
        assert unified_address(items) == row[6]


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        # a testnet UA, a unified viewing key and a Sapling viewing-key prefix are not mainnet addresses
        ("utest1" + "q" * 100, "bad_hrp"),
        ("uview1" + "q" * 100, "bad_version"),
        ("ztestsapling1" + "q" * 70, "bad_hrp"),
    ],
)
def test_zcash_bech32_things_that_are_not_mainnet_addresses(address: str, reason: str) -> None:
    with pytest.raises(InvalidAddress) as caught:
        normalize("zcash", address)
    assert caught.value.reason == reason


def test_unified_address_structure_rules() -> None:
    t = bytes(range(20))
    s = bytes(range(43))
    # Both a P2PKH and a P2SH receiver: not allowed (ZIP-316).
    both = unified_address({0x00: t, 0x01: t, 0x02: s})
    # Only metadata, no receiver.
    metadata_only = unified_address({0xC0: bytes(40)})
    # "MUST understand" metadata in a revision-0 address.
    must_understand = unified_address({0x02: s, 0xE0: b"\x01\x02\x03\x04"})
    for address, reason in ((both, "bad_encoding"), (metadata_only, "bad_encoding"), (must_understand, "bad_version")):
        with pytest.raises(InvalidAddress) as caught:
            normalize("zcash", address)
        assert caught.value.reason == reason, address
    # A bech32 (not bech32m) checksum over a valid UA body is rejected; so is a single changed character.
    valid = unified_address({0x00: t, 0x03: s})
    assert normalize("zcash", valid).kind == "unified"
    flipped = valid[:-10] + ("q" if valid[-10] != "q" else "p") + valid[-9:]
    with pytest.raises(InvalidAddress):
        normalize("zcash", flipped)


def test_a_unified_address_longer_than_128_characters_is_not_cut_off() -> None:
    row = max(vectors("unified_address.json"), key=lambda r: len(str(r[6])))
    assert len(str(row[6])) > 400
    assert normalize("zcash", str(row[6])).kind == "unified"


def test_sapling_address_round_trip() -> None:
    rng = random.Random(3)
    address = random_address("zcash", rng, kind="sapling")
    assert normalize("zcash", address).key == f"zec:{address}" == normalize_key("zcash", address.upper())
