"""Classification rules (contract §2): defaults from the migration plan, user files replace them."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from parity.core.classify import DEFAULT_CATEGORY, load_rules
from parity.core.errors import ConfigurationError

PLAN = [
    ("system.health", "CRITICAL"),
    ("error.raised", "CRITICAL"),
    ("perf.alert", "CRITICAL"),
    ("connection.status", "CRITICAL"),
    ("debug.log", "INFORMATIONAL"),
    ("metrics.verbose", "INFORMATIONAL"),
    ("session.started", "INFORMATIONAL"),
    ("user.action", "INFORMATIONAL"),
    ("deprecated.x", "LEGACY"),
]


@pytest.mark.parametrize(("event_type", "category"), PLAN)
def test_default_rules_follow_the_migration_plan(event_type: str, category: str) -> None:
    classifier = load_rules()
    assert classifier.match(event_type) == category
    assert classifier.classify(event_type) == category


@pytest.mark.parametrize("event_type", ["foo.bar", "", "System.Health", "healthy", "errors"])
def test_unmatched_type_is_informational_and_unclassified(event_type: str) -> None:
    classifier = load_rules()
    assert classifier.match(event_type) is None
    assert classifier.classify(event_type) == DEFAULT_CATEGORY == "INFORMATIONAL"


def test_classify_column_marks_unclassified_rows() -> None:
    types = pa.chunked_array(
        [["system.health", "foo.bar"], ["deprecated.x", "foo.bar", "user.action"]]
    )
    categories, unclassified = load_rules().classify_column(types)
    assert categories.to_pylist() == [
        "CRITICAL",
        "INFORMATIONAL",
        "LEGACY",
        "INFORMATIONAL",
        "INFORMATIONAL",
    ]
    assert unclassified.to_pylist() == [False, True, False, True, False]


def test_first_matching_rule_wins(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        '[[rule]]\ncategory = "LEGACY"\npatterns = ["metrics.old.*"]\n'
        '[[rule]]\ncategory = "CRITICAL"\npatterns = ["metrics.*"]\n'
    )
    classifier = load_rules(path)
    assert classifier.classify("metrics.old.cpu") == "LEGACY"
    assert classifier.classify("metrics.cpu") == "CRITICAL"


def test_user_rules_file_replaces_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[[rule]]\ncategory = "CRITICAL"\npatterns = ["payments.*"]\n')
    classifier = load_rules(path)
    assert classifier.source == str(path)
    assert classifier.match("payments.failed") == "CRITICAL"
    # The built-in rules are gone, not merged: the plan's types are now unclassified.
    for event_type, _ in PLAN:
        assert classifier.match(event_type) is None
        assert classifier.classify(event_type) == "INFORMATIONAL"


BAD_RULES = [
    ("not toml", "[[rule]\ncategory = ", "not valid TOML"),
    ("no rules", "# nothing here\n", "no [[rule]] tables"),
    (
        "bad category",
        '[[rule]]\ncategory = "LEGACY"\npatterns = ["a.*"]\n'
        '[[rule]]\ncategory = "URGENT"\npatterns = ["b.*"]\n',
        "rule 2",
    ),
    ("missing category", '[[rule]]\npatterns = ["a.*"]\n', "rule 1"),
    ("missing patterns", '[[rule]]\ncategory = "CRITICAL"\n', "rule 1"),
    ("patterns not a list", '[[rule]]\ncategory = "CRITICAL"\npatterns = "a.*"\n', "rule 1"),
    ("pattern not a string", '[[rule]]\ncategory = "CRITICAL"\npatterns = ["a", 1]\n', "rule 1"),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in BAD_RULES], ids=[c[0] for c in BAD_RULES]
)
def test_bad_rules_file_names_the_file_and_rule(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "my-rules.toml"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as info:
        load_rules(path)
    message = str(info.value)
    assert str(path) in message
    assert expected in message


def test_missing_rules_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigurationError, match="absent.toml"):
        load_rules(path)
