"""Flag rows as stored, for both control-plane implementations (:mod:`parity.io.control`):
the audit row, the values in force, what a change may hold, the rollout state, and the
rollback decisions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from parity.core import rollout
from parity.core.errors import FlagError
from parity.core.routing import FLAG_DEFAULTS, validate_flag

ROLLOUT_STATE_FLAG = rollout.ROLLOUT_STATE_FLAG
#: Rows of ``feature_flags`` that are Parity's own state, never set by hand.
RESERVED_FLAGS = frozenset({ROLLOUT_STATE_FLAG})


@dataclass(frozen=True)
class AuditRow:
    """One row of ``feature_flag_audit``."""

    id: int
    flag: str
    old_value: Any
    new_value: Any
    changed_at: dt.datetime
    actor: str
    reason: str
    evidence: Any


#: A rollback decision's mode: flags changed, or (PARITY_ROLLBACK_DRY_RUN) only decided.
APPLIED = "applied"
DRY_RUN = "dry_run"


@dataclass(frozen=True)
class RollbackDecision:
    """One row of ``parity_rollback_decisions``: a rollback applied, or one that dry-run mode
    would have applied, with the flags it set (or would set), who decided and why."""

    id: int
    decided_at: dt.datetime
    mode: str  # APPLIED or DRY_RUN
    reason: str
    changes: dict[str, Any]
    source: str
    evidence: Any


def decision_row(raw: Mapping[str, Any]) -> RollbackDecision:
    """A decision from its JSON form (the SQL function's result, a PostgREST row)."""
    decided_at = raw["decided_at"]
    if isinstance(decided_at, str):
        decided_at = dt.datetime.fromisoformat(decided_at)
    return RollbackDecision(
        int(raw["id"]),
        decided_at.astimezone(dt.UTC),
        raw["mode"],
        raw["reason"],
        dict(raw["changes"] or {}),
        raw["source"],
        raw["evidence"],
    )


def checked_changes(changes: Mapping[str, Any], actor: str, reason: str) -> dict[str, Any]:
    """``changes`` with every catalogue value validated; FlagError names what is wrong."""
    if not reason.strip():
        raise FlagError("a flag change needs a reason (--reason)")
    if not actor.strip():
        raise FlagError("a flag change needs an actor")
    return {
        name: value if name in RESERVED_FLAGS else validate_flag(name, value)
        for name, value in changes.items()
    }


def in_force(rows: Mapping[str, Any], *, include_reserved: bool) -> dict[str, Any]:
    """Stored ``feature_flags`` rows as the values in force: defaults for flags never set,
    names outside the catalogue ignored."""
    values: dict[str, Any] = dict(FLAG_DEFAULTS)
    for name, value in rows.items():
        if name in FLAG_DEFAULTS or (include_reserved and name in RESERVED_FLAGS):
            values[name] = value
    return values


def audit_row(raw: Mapping[str, Any]) -> AuditRow:
    """An audit row from its JSON form (the SQL function's result, a PostgREST row)."""
    changed_at = raw["changed_at"]
    if isinstance(changed_at, str):
        changed_at = dt.datetime.fromisoformat(changed_at)
    return AuditRow(
        int(raw["id"]),
        raw["flag"],
        raw["old_value"],
        raw["new_value"],
        changed_at.astimezone(dt.UTC),
        raw["actor"],
        raw["reason"],
        raw["evidence"],
    )


def read_state_from(values: Mapping[str, Any]) -> rollout.RolloutState:
    """The rollout state in flag values read with ``include_reserved``."""
    raw = values.get(ROLLOUT_STATE_FLAG)
    return rollout.RolloutState() if raw is None else rollout.RolloutState.from_json(raw)
