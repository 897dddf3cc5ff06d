"""Related addresses of a listed key holder: deterministic relations, each matched with its provenance.

A destination reaching property of a listed party through an address the same key controls is flagged with match
type ``related`` (one severity level below a direct match) and the relation; a Zcash unified address is flagged
``direct`` through the receiver that is listed. The table is built exactly as the loader builds it
(`listing_entries`), and events go through the real batch pipeline (decode, normalize, one lookup, decide, encode).
Independent references: the `base58` and `bech32` packages, pycryptodome's RIPEMD-160, and `solders` (Solana's
own Rust implementation) for associated token accounts.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from decimal import Decimal

import base58
import bech32
import pytest
from Crypto.Hash import RIPEMD160
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from solders.pubkey import Pubkey

from aml_screener.devstack.address_factory import cashaddr_address, unified_address
from aml_screener.screener.codec import EventEncoder, FramedReader
from aml_screener.screener.lookup import LookupResult
from aml_screener.screener.schemas import WITHDRAWAL_REQUESTED
from aml_screener.screening.addresses import normalize, normalize_key, normalize_listed_key
from aml_screener.screening.records import Match
from aml_screener.screening.related import (
    DEFAULT_SOLANA_MINTS,
    ListingRelations,
    SolanaMint,
    associated_token_account,
    listing_entries,
    screening_keys,
)
from aml_screener.screening.watchlist import Listing
from tests.pipeline_support import CATALOG, REPOSITORY, Record, batch_screener

READER = FramedReader(REPOSITORY)
hashes20 = st.binary(min_size=20, max_size=20)


def listing(address: str, asset: str, category: str = "sanctions") -> Listing:
    return Listing("ofac-sdn", category, "sdn_advanced.xml", "27307", address, "Lazarus Group", ("DPRK3",), asset)


def table(*listed: tuple[str, str], relations: ListingRelations | None = None) -> dict[str, list[Match]]:
    """key -> stored matches, as the loader writes them (TableWriter.add uses listing_entries)."""
    stored: dict[str, list[Match]] = {}
    for asset, address in listed:
        key = normalize_listed_key(asset, address)
        for entry_key, item in listing_entries(key, listing(address, asset), relations or ListingRelations()):
            stored.setdefault(entry_key, []).append(item.as_match())
    return stored


def screen(watchlist: dict[str, list[Match]], network: str, address: str) -> dict:
    """The decision the screener makes for one withdrawal to ``address`` on ``network``."""

    def lookup(keys: Sequence[str]) -> LookupResult:
        return LookupResult("v-test", 1, {key: watchlist[key] for key in keys if key in watchlist}, 0.001)

    entry = CATALOG.current(WITHDRAWAL_REQUESTED)
    value = EventEncoder(entry.schema, entry.schema_id).encode(
        {
            "event_id": "e-1",
            "exchange_id": "upbit-kr",
            "account_id": "acct-1",
            "asset": "X",
            "network": network,
            "destination_address": address,
            "destination_tag": None,
            "amount": Decimal(1),
            "usd_value": None,
            "requested_at": 1_700_000_000_000,
            "metadata": None,
        }
    )
    screener = batch_screener(lookup)
    done = screener.complete(screener.prepare([Record("in", 0, 0, 1, b"k", value)]))
    return READER.decode(done.outputs[0].value)[1]


def only_match(decision: dict) -> dict:
    assert decision["decision"] == "FLAGGED", decision
    assert len(decision["matches"]) == 1, decision["matches"]
    match: dict = decision["matches"][0]
    return match


def p2pkh(version: bytes, pubkey_hash: bytes) -> str:
    return base58.b58encode_check(version + pubkey_hash).decode()


def segwit(hrp: str, program: bytes) -> str:
    """Witness v0 address from the reference `bech32` package (BIP-173)."""
    address = bech32.encode(hrp, 0, program)
    assert address is not None
    return address


def hash160(data: bytes) -> bytes:
    return RIPEMD160.new(hashlib.sha256(data).digest()).digest()


# --------------------------------------------------------------------------------------------------------
# EVM and TRON: one secp256k1 key, the same 20-byte account
# --------------------------------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(account=hashes20)
def test_an_evm_account_and_the_tron_address_of_the_same_bytes_are_related_both_ways(account: bytes) -> None:
    evm = "0x" + account.hex()
    tron = p2pkh(b"\x41", account)
    match = only_match(screen(table(("ETH", evm)), "tron", tron))
    assert (match["match_type"], match["relation"]) == ("related", "same_account")
    assert match["listed_address"] == evm and match["listed_key"] == "evm:" + evm
    assert match["matched_key"] == "evm:" + evm
    back = only_match(screen(table(("TRX", tron)), "bsc", evm.upper().replace("0X", "0x")))
    assert (back["match_type"], back["relation"], back["listed_key"]) == ("related", "same_account", f"trx:{tron}")


def test_a_related_sanctions_match_is_one_level_below_a_direct_one() -> None:
    account = bytes(range(20))
    watchlist = table(("ETH", "0x" + account.hex()))
    assert screen(watchlist, "ethereum", "0x" + account.hex())["severity"] == "critical"
    assert screen(watchlist, "tron", p2pkh(b"\x41", account))["severity"] == "high"
    scam = table(("ETH", "0x" + account.hex()))
    for matches in scam.values():
        for match in matches:
            match["category"] = "scam"
    assert screen(scam, "tron", p2pkh(b"\x41", account))["severity"] == "low"


def test_the_decision_names_the_typed_spelling_the_key_and_every_key_checked() -> None:
    account = bytes(range(20))
    tron = p2pkh(b"\x41", account)
    decision = screen({}, "trc20", "41" + account.hex().upper())
    assert decision["decision"] == "CLEAR"
    assert decision["address"] == "41" + account.hex().upper()
    assert decision["address_key"] == f"trx:{tron}"
    assert decision["checked_keys"] == [{"key": "evm:0x" + account.hex(), "relation": "same_account"}]


# --------------------------------------------------------------------------------------------------------
# Bitcoin family: one public-key hash
# --------------------------------------------------------------------------------------------------------


def bitcoin_family_spellings(pubkey_hash: bytes) -> dict[str, tuple[str, str]]:
    """Every destination one public-key hash controls on BTC/BCH/BSV: name -> (network, address)."""
    return {
        "btc-p2pkh": ("bitcoin", p2pkh(b"\x00", pubkey_hash)),
        "btc-p2wpkh": ("bitcoin", segwit("bc", pubkey_hash)),
        "btc-p2sh-p2wpkh": ("bitcoin", p2pkh(b"\x05", hash160(b"\x00\x14" + pubkey_hash))),
        "bch-p2pkh": ("bitcoin-cash", cashaddr_address(0, pubkey_hash)),
        "bch-legacy": ("bitcoin-cash", p2pkh(b"\x00", pubkey_hash)),
        "bsv-p2pkh": ("bitcoin-sv", p2pkh(b"\x00", pubkey_hash)),
    }


LISTABLE = {"btc-p2pkh": "XBT", "btc-p2wpkh": "XBT", "bch-p2pkh": "BCH", "bch-legacy": "BCH", "bsv-p2pkh": "BSV"}


@settings(max_examples=40, deadline=None)
@given(pubkey_hash=hashes20)
def test_every_destination_of_a_listed_pubkey_hash_is_caught_on_btc_bch_and_bsv(pubkey_hash: bytes) -> None:
    spellings = bitcoin_family_spellings(pubkey_hash)
    for listed_name, asset in LISTABLE.items():
        watchlist = table((asset, spellings[listed_name][1]))
        listed_key = normalize_listed_key(asset, spellings[listed_name][1])
        for name, (network, address) in spellings.items():
            decision = screen(watchlist, network, address)
            match = only_match(decision)
            if decision["address_key"] == listed_key:  # the same destination (BCH legacy and CashAddr)
                assert (match["match_type"], match["relation"]) == ("direct", None), (listed_name, name)
            else:
                assert (match["match_type"], match["relation"]) == ("related", "same_pubkey_hash"), (listed_name, name)
                assert match["listed_key"] == listed_key and match["listed_address"] == spellings[listed_name][1]


@settings(max_examples=40, deadline=None)
@given(script_hash=hashes20)
def test_a_p2sh_script_hash_is_related_across_btc_bch_and_bsv(script_hash: bytes) -> None:
    btc = p2pkh(b"\x05", script_hash)
    watchlist = table(("XBT", btc))
    for network, address in (("bitcoin-cash", cashaddr_address(1, script_hash)), ("bitcoin-sv", btc)):
        match = only_match(screen(watchlist, network, address))
        assert (match["match_type"], match["relation"]) == ("related", "same_script_hash")
    assert screen(watchlist, "bitcoin", btc)["matches"][0]["match_type"] == "direct"
    # Bitcoin Gold, Litecoin, Dogecoin do not share Bitcoin's encoding: no relation is claimed there.
    assert screen(watchlist, "litecoin", btc)["decision"] == "CLEAR"


@settings(max_examples=40, deadline=None)
@given(pubkey_hash=hashes20)
def test_litecoin_pubkey_hash_spellings_are_related_within_litecoin(pubkey_hash: bytes) -> None:
    legacy = p2pkh(b"\x30", pubkey_hash)
    wrapped = hash160(b"\x00\x14" + pubkey_hash)
    destinations = [
        segwit("ltc", pubkey_hash),
        p2pkh(b"\x32", wrapped),
        p2pkh(b"\x05", wrapped),  # the legacy P2SH spelling of the same wrapped script
    ]
    for listed in (legacy, segwit("ltc", pubkey_hash)):
        watchlist = table(("LTC", listed))
        for address in [legacy, *destinations]:
            decision = screen(watchlist, "litecoin", address)
            same = normalize_key("litecoin", address) == normalize_key("litecoin", listed)
            expected = ("direct", None) if same else ("related", "same_pubkey_hash")
            match = only_match(decision)
            assert (match["match_type"], match["relation"]) == expected, (listed, address)


def test_unrelated_chains_get_no_relation() -> None:
    rng = random.Random(5)
    for network, address in (
        ("dogecoin", p2pkh(b"\x1e", rng.randbytes(20))),
        ("xrp-ledger", "rHb9CJAWyB4rj91VRWn96DkukG4bwdtyTh"),
        ("monero", "888tNkZrPN6JsEgekjMnABU4TBzc2Dt29EPAvkRxbANsAnjyPbb3iQ1YBRk1UXcdRsiKc9dhwMVgN5S9cQUiyoogDavup3H"),
    ):
        assert screening_keys(normalize_key(network, address)) == ()


# --------------------------------------------------------------------------------------------------------
# Solana associated token accounts
# --------------------------------------------------------------------------------------------------------

ATA_PROGRAM = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
TOKEN_PROGRAMS = {
    "token": Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"),
    "token-2022": Pubkey.from_string("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb"),
}


@settings(max_examples=60, deadline=None)
@given(wallet=st.binary(min_size=32, max_size=32), mint=st.binary(min_size=32, max_size=32), t22=st.booleans())
def test_associated_token_accounts_equal_solanas_own_derivation(wallet: bytes, mint: bytes, t22: bool) -> None:
    program = "token-2022" if t22 else "token"
    ours = associated_token_account(wallet, SolanaMint("m", base58.b58encode(mint).decode(), program))
    theirs, _bump = Pubkey.find_program_address([wallet, bytes(TOKEN_PROGRAMS[program]), mint], ATA_PROGRAM)
    assert ours == bytes(theirs)


def test_a_listed_solana_wallets_token_accounts_are_related_for_the_configured_mints() -> None:
    wallet = Pubkey.from_string("9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM")
    watchlist = table(("SOL", str(wallet)))
    assert {mint.name for mint in DEFAULT_SOLANA_MINTS} == {"USDC", "USDT", "PYUSD"}
    for mint in DEFAULT_SOLANA_MINTS:
        ata, _bump = Pubkey.find_program_address(
            [bytes(wallet), bytes(TOKEN_PROGRAMS[mint.token_program]), bytes(Pubkey.from_string(mint.mint))],
            ATA_PROGRAM,
        )
        match = only_match(screen(watchlist, "solana", str(ata)))
        assert (match["match_type"], match["relation"]) == ("related", "associated_token_account")
        assert match["listed_address"] == str(wallet) and match["matched_key"] == f"sol:{ata}"
    # Another mint's token account is not derived unless configured.
    other = SolanaMint("BONK", "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263", "token")
    other_ata, _ = Pubkey.find_program_address(
        [bytes(wallet), bytes(TOKEN_PROGRAMS["token"]), bytes(Pubkey.from_string(other.mint))], ATA_PROGRAM
    )
    assert screen(watchlist, "solana", str(other_ata))["decision"] == "CLEAR"
    configured = table(("SOL", str(wallet)), relations=ListingRelations((other,)))
    assert only_match(screen(configured, "solana", str(other_ata)))["relation"] == "associated_token_account"


def test_the_mint_configuration_is_part_of_the_key_scheme_fingerprint() -> None:
    other = SolanaMint("BONK", "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263", "token")
    assert ListingRelations().fingerprint() != ListingRelations((other,)).fingerprint()
    assert ListingRelations().fingerprint() == ListingRelations(tuple(reversed(DEFAULT_SOLANA_MINTS))).fingerprint()
    with pytest.raises(ValueError, match="token_program"):
        SolanaMint("x", other.mint, "token-2023")


# --------------------------------------------------------------------------------------------------------
# Zcash unified addresses: the receivers are the destinations
# --------------------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    t=hashes20,
    sapling=st.binary(min_size=43, max_size=43),
    orchard=st.binary(min_size=43, max_size=43),
    other_orchard=st.binary(min_size=43, max_size=43),
)
def test_a_unified_address_with_a_listed_receiver_is_flagged_directly(
    t: bytes, sapling: bytes, orchard: bytes, other_orchard: bytes
) -> None:
    assume(other_orchard != orchard)
    t1 = p2pkh(b"\x1c\xb8", t)
    ua = unified_address({0x00: t, 0x02: sapling, 0x03: orchard})
    # A listed t1 address; the withdrawal goes to a unified address holding it as its transparent receiver.
    match = only_match(screen(table(("ZEC", t1)), "zcash", ua))
    assert (match["match_type"], match["relation"], match["matched_key"]) == ("direct", "unified_receiver", f"zec:{t1}")
    # A listed unified address; the withdrawal goes to its transparent receiver, or to another unified address
    # sharing its Orchard receiver.
    listed_ua = table(("ZEC", ua))
    assert only_match(screen(listed_ua, "zcash", t1))["match_type"] == "direct"
    sharing = unified_address({0x03: orchard})
    assert only_match(screen(listed_ua, "zcash", sharing))["relation"] == "unified_receiver"
    assert screen(listed_ua, "zcash", unified_address({0x03: other_orchard}))["decision"] == "CLEAR"
    # The same unified address, listed and withdrawn to: one match, direct, no relation.
    same = only_match(screen(listed_ua, "zcash", ua.upper()))
    assert (same["match_type"], same["relation"]) == ("direct", None)


def test_the_decision_records_every_receiver_of_a_unified_address_shielded_ones_included() -> None:
    t, sapling, orchard = bytes(20), bytes(range(43)), bytes(range(1, 44))
    ua = unified_address({0x00: t, 0x02: sapling, 0x03: orchard})
    decision = screen({}, "zcash", ua)
    assert decision["decision"] == "CLEAR" and decision["address_key"] == f"zec:{ua}"
    receivers = normalize("zcash", ua).receivers
    assert decision["checked_keys"] == [{"key": r.key, "relation": "unified_receiver"} for r in receivers]
    assert [r.kind for r in receivers] == ["p2pkh", "sapling", "orchard"]
