"""`aml-screener policy check`: operators validate a policy file before they deploy it."""

from __future__ import annotations

import json
from pathlib import Path

from aml_screener.cli import main
from aml_screener.screening.policy import DEFAULT_POLICY

SHIPPED = Path(__file__).resolve().parents[2] / "helm" / "aml-screener" / "files" / "policy.toml"


def test_the_shipped_policy_checks_and_shows_its_version_and_every_rule_in_order(capsys):
    assert main(["policy", "check", str(SHIPPED)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == DEFAULT_POLICY.version
    assert [rule["id"] for rule in shown["rules"]] == [rule.id for rule in DEFAULT_POLICY.effective]
    assert all(rule["builtin"] for rule in shown["rules"])


def test_an_operator_rule_comes_before_the_built_in_ones(tmp_path, capsys):
    policy = tmp_path / "policy.toml"
    policy.write_text(
        'version = "v2"\n[[rule]]\nid = "mixers"\ndirection = "deposit"\ncategory = "mixer"\naction = "freeze"\n'
    )
    assert main(["policy", "check", str(policy)]) == 0
    rules = json.loads(capsys.readouterr().out)["rules"]
    assert (rules[0]["id"], rules[0]["action"], rules[0]["builtin"]) == ("mixers", "freeze", False)
    assert all(rule["builtin"] for rule in rules[1:])


def test_an_invalid_file_exits_2_naming_the_file_the_rule_and_the_field(tmp_path, capsys):
    policy = tmp_path / "policy.toml"
    policy.write_text('version = "v2"\n[[rule]]\nid = "oops"\ndirection = "deposit"\naction = "reject"\n')
    assert main(["policy", "check", str(policy)]) == 2
    err = capsys.readouterr().err
    assert str(policy) in err and "oops" in err and "'action'" in err
