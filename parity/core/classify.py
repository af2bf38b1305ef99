"""Event classification (contract §2): rules are data, matched on ``event_type`` globs."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from parity.core.errors import ConfigurationError
from parity.core.events import CATEGORIES

DEFAULT_CATEGORY = "INFORMATIONAL"


@dataclass(frozen=True)
class Rule:
    category: str
    patterns: tuple[str, ...]


@dataclass(frozen=True)
class Classifier:
    """Ordered rules; the first match wins; unmatched types are INFORMATIONAL."""

    rules: tuple[Rule, ...]
    source: str = "built-in defaults"

    def __post_init__(self) -> None:
        regexes = [
            (rule.category, re.compile(fnmatch.translate(p)))
            for rule in self.rules
            for p in rule.patterns
        ]
        object.__setattr__(self, "_regexes", regexes)

    def match(self, event_type: str) -> str | None:
        """The category a rule assigns, or None when no rule matches."""
        for category, regex in self._regexes:  # type: ignore[attr-defined]
            if regex.match(event_type):
                return category
        return None

    def classify(self, event_type: str) -> str:
        return self.match(event_type) or DEFAULT_CATEGORY

    def classify_column(self, event_types: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
        """Vectorised: classify each distinct type once. Returns (category, unclassified)."""
        if isinstance(event_types, pa.ChunkedArray):
            event_types = event_types.combine_chunks()
        distinct = pc.unique(event_types).to_pylist()
        matched = [self.match(t) if t is not None else None for t in distinct]
        index = pc.index_in(event_types, value_set=pa.array(distinct, pa.string()))
        categories = pc.take(pa.array([m or DEFAULT_CATEGORY for m in matched], pa.string()), index)
        unclassified = pc.take(pa.array([m is None for m in matched], pa.bool_()), index)
        return categories, unclassified


def load_rules(path: str | Path | None = None) -> Classifier:
    """Load a rules file (TOML, see ``parity/rules/default.toml``); None loads the defaults."""
    if path is None:
        text = resources.files("parity.core.rules").joinpath("default.toml").read_text("utf-8")
        where = "built-in defaults"
    else:
        where = str(path)
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise ConfigurationError(
                f"classification rules {where}: cannot read ({exc.strerror})"
            ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"classification rules {where}: not valid TOML ({exc})") from None
    rules = []
    for i, item in enumerate(data.get("rule", []), start=1):
        category = item.get("category")
        patterns = item.get("patterns")
        if category not in CATEGORIES:
            raise ConfigurationError(
                f"classification rules {where}: rule {i} has category {category!r}; "
                f"use one of {', '.join(CATEGORIES)}"
            )
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise ConfigurationError(
                f"classification rules {where}: rule {i} needs `patterns`, a list of strings"
            )
        rules.append(Rule(category, tuple(patterns)))
    if not rules:
        raise ConfigurationError(f"classification rules {where}: no [[rule]] tables found")
    return Classifier(tuple(rules), where)
