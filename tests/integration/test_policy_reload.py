"""The action policy file of a running `aml-screener run` on the real stack: changed without a restart, refused when
broken (the previous policy stays), and refused at start-up with exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from aml_screener.screening.policy import DEFAULT_POLICY, parse_policy
from tests.integration.harness import generate, load_bundled_watchlist, produce

pytestmark = pytest.mark.integration

LENIENT = """
version = "trial-1"

[[rule]]
id = "hold-every-clear-withdrawal"
direction = "withdrawal"
outcome = ["clear"]
action = "hold"

[[rule]]
id = "try-allowing-sanctions"        # the sanctions floor must override it
direction = "withdrawal"
category = ["sanctions"]
action = "allow"
"""


def decided(reader, events, what):
    ids = {event.event_id for event in events}
    outputs = reader.read_until(lambda o: ids <= {d["event_id"] for d in o.decisions}, 60, what)
    return [d for d in outputs.decisions if d["event_id"] in ids]


def test_a_changed_policy_file_applies_from_the_next_batch_and_a_broken_one_is_refused(
    stack, screeners, reader, tmp_path: Path
):
    listings = load_bundled_watchlist(stack.redis_url)
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text('version = "default"\ndescription = "the built-in rules"\n')
    screener = screeners(AML_POLICY_FILE=str(policy_file), AML_POLICY_RELOAD_SECONDS="0.2")
    screener.wait_assigned()
    first = generate(listings, 200, seed=31, hit_share=0.1, malformed_share=0.0, invalid_share=0.0)
    produce(stack, first)
    before = decided(reader, first, "decisions under the first policy")
    assert {d["policy_version"] for d in before} == {DEFAULT_POLICY.version}
    assert {d["action"] for d in before if d["decision"] == "CLEAR"} == {"allow"}

    policy_file.write_text(LENIENT)
    trial = parse_policy(LENIENT)
    screener.wait_until(
        lambda: screener.metric("aml_screener_policy_info", version=trial.version) == 1, 30, "the new policy loaded"
    )
    second = generate(listings, 200, seed=32, hit_share=0.1, malformed_share=0.0, invalid_share=0.0)
    produce(stack, second)
    after = decided(reader, second, "decisions under the changed policy")
    assert {d["policy_version"] for d in after} == {trial.version}, "no restart needed"
    clear = [d for d in after if d["decision"] == "CLEAR"]
    assert clear and {(d["action"], d["policy_rule"]) for d in clear} == {("hold", "hold-every-clear-withdrawal")}
    sanctioned = [d for d in after if d["decision"] == "FLAGGED"]
    assert sanctioned and {(d["action"], d["policy_rule"]) for d in sanctioned} == {("reject", "floor:sanctions")}
    assert {d["policy_overridden_rule"] for d in sanctioned} == {"try-allowing-sanctions"}

    policy_file.write_text(LENIENT.replace('action = "hold"', 'action = "freeze"'))  # a deposit action: invalid
    screener.wait_until(lambda: screener.metric("aml_screener_policy_file_refused") == 1, 30, "the broken file refused")
    assert screener.metric("aml_screener_policy_reloads_total", result="invalid") >= 1
    third = generate(listings, 50, seed=33, hit_share=0.1, malformed_share=0.0, invalid_share=0.0)
    produce(stack, third)
    assert {d["policy_version"] for d in decided(reader, third, "decisions after the refusal")} == {trial.version}
    refusal = next(line for line in screener.log_lines() if line["msg"].startswith("policy file refused"))
    assert "hold-every-clear-withdrawal" in refusal["problem"] and "action" in refusal["problem"]
    assert refusal["policy_version"] == trial.version, "the log says which policy stays"
    assert screener.terminate() == 0


def test_an_invalid_policy_file_at_start_up_is_a_configuration_error(stack, screeners, tmp_path: Path):
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text('version = "x"\n[[rule]]\nid = "r1"\ndirection = "withdrawal"\naction = "freeze"\n')
    screener = screeners(AML_POLICY_FILE=str(policy_file))
    assert screener.proc is not None
    assert screener.proc.wait(60) == 2
    (error,) = [line for line in screener.log_lines() if line["level"] == "error"]
    assert error["msg"] == "cannot start: invalid action policy"
    assert str(policy_file) in error["detail"] and "r1" in error["detail"] and "action" in error["detail"]
