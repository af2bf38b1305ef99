"""The control plane: what rollout control reads and writes (contract §5).

Flags with compare-and-set, their audit history, the delivery-metric samples and the
rollout state (kept as the reserved flag ``PARITY_ROLLOUT_STATE``, audited like the flags)
sit behind one small protocol, as events sit behind :class:`parity.io.store.EventStore`:

- ``postgres`` (:mod:`parity.io.control_pg`): psycopg over any PostgreSQL, the embedded
  server and a Supabase project's direct or session-pooler connection;
- ``rest`` (:mod:`parity.io.control_rest`): the Supabase REST API, writes through the
  PostgREST RPC function of migration 003.

Both write through the same SQL function (``parity_set_flags``): one transaction under the
flags' advisory lock, one audit row per changed flag, a stale compare-and-set refused. What
rollback, promotion, pause and resume change is decided here, once, on values read through
the protocol, and written compare-and-set on those values, so a decision taken on stale
values is never applied and two rollbacks at once leave one change.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from parity.core import rollout, triggers
from parity.core.config import Settings
from parity.core.errors import ConcurrentUpdateError, FlagError
from parity.core.routing import FLAG_DEFAULTS, FlagTimeline
from parity.io.flagrows import (
    APPLIED,
    DRY_RUN,
    RESERVED_FLAGS,
    ROLLOUT_STATE_FLAG,
    AuditRow,
    RollbackDecision,
    read_state_from,
)
from parity.io.store import name_database

__all__ = [
    "APPLIED",
    "DRY_RUN",
    "RESERVED_FLAGS",
    "ROLLOUT_STATE_FLAG",
    "Applied",
    "AuditRow",
    "ControlPlane",
    "RollbackDecision",
    "Health",
    "apply_rollback",
    "apply_transition",
    "load_timeline",
    "lookback",
    "open_control_plane",
    "read_health",
    "read_state",
    "read_state_from",
    "record_decision",
]

#: How often a rollback re-reads and retries when another writer got in first.
ROLLBACK_ATTEMPTS = 5


@runtime_checkable
class ControlPlane(Protocol):
    #: ``postgres`` or ``rest``; shown in messages and metadata.
    transport: str
    #: Where it points, without secrets (host, database or API, schema).
    where: str

    def read_flags(self, *, include_reserved: bool = False) -> dict[str, Any]:
        """The values in force: every catalogue flag (its default when never set), and the
        reserved rows too with ``include_reserved``."""
        ...

    def set_flags(
        self,
        changes: Mapping[str, Any],
        *,
        actor: str,
        reason: str,
        evidence: Any = None,
        expected: Mapping[str, Any] | None = None,
        now: dt.datetime | None = None,
    ) -> list[AuditRow]:
        """Apply ``changes`` in one transaction, auditing each flag that actually changed;
        returns the audit rows written (none when everything already had these values).
        With ``expected`` it is compare-and-set: when a value in force differs (a reserved
        row that does not exist counts as None), nothing is written and
        ConcurrentUpdateError is raised."""
        ...

    def history(self, flag: str | None = None) -> list[AuditRow]:
        """Every audit row (or one flag's), oldest first."""
        ...

    def load_samples(self, since: dt.datetime, until: dt.datetime) -> list[triggers.MetricSample]:
        """``delivery_metrics`` rows with ``since < sampled_at <= until``, oldest first."""
        ...

    def load_heartbeats(self, since: dt.datetime, until: dt.datetime) -> dict[str, dt.datetime]:
        """Each producer's newest heartbeat event (``HEARTBEAT_EVENT_TYPE``) in the events
        table with ``since < emitted_at <= until``, by the producer its payload names."""
        ...

    def record_decision(
        self,
        *,
        mode: str,
        reason: str,
        changes: Mapping[str, Any],
        source: str,
        evidence: Any = None,
        now: dt.datetime | None = None,
    ) -> RollbackDecision:
        """Append a rollback decision (``applied``, or ``dry_run``: flags untouched) to
        ``parity_rollback_decisions``; never touches the flags or their audit."""
        ...

    def decisions(self) -> list[RollbackDecision]:
        """Every rollback decision, oldest first."""
        ...

    def close(self) -> None: ...


def open_control_plane(
    settings: Settings,
    *,
    connect_timeout_s: float = 10.0,
    statement_timeout_s: float = 60.0,
    announce: Callable[[str], None] | None = None,
) -> ControlPlane:
    """The control plane beside the events store the settings point at (the same transport,
    the events table's schema); starts the embedded server when nothing is configured
    (``announce``: see :func:`parity.io.store.name_database`)."""
    name_database(settings, announce)
    if settings.transport == "rest":
        from parity.io.control_rest import RestControlPlane

        assert settings.supabase_url and settings.supabase_key
        return RestControlPlane(
            settings.supabase_url,
            settings.supabase_key,
            settings.events_table.schema,
            events_table=settings.events_table.name,
            timeout_s=statement_timeout_s,
            connect_timeout_s=connect_timeout_s,
        )
    from parity.io.control_pg import PostgresControlPlane

    url = settings.database_url
    if url is None:
        from parity.io.embedded import ensure_embedded

        url = ensure_embedded(settings, announce=announce)
    return PostgresControlPlane(
        url,
        settings.events_table.schema,
        events_table=settings.events_table.name,
        connect_timeout_s=connect_timeout_s,
        statement_timeout_s=statement_timeout_s,
    )


# -- decisions applied through the seam -----------------------------------------------------


@dataclass(frozen=True)
class Applied:
    applied: bool  # False: nothing needed changing (already in force)
    changes: dict[str, Any]
    flags_after: dict[str, Any]
    audit_ids: list[int]
    state: rollout.RolloutState


def read_state(control: ControlPlane) -> rollout.RolloutState:
    return read_state_from(control.read_flags(include_reserved=True))


def _confirm(control: ControlPlane, expected: Mapping[str, Any]) -> dict[str, Any]:
    after = control.read_flags()
    wrong = {k: after.get(k) for k, v in expected.items() if after.get(k) != v}
    if wrong:
        raise FlagError(
            f"flags read back from {control.where} after the change differ from what was "
            f"written: {wrong}"
        )
    return after


def apply_rollback(
    control: ControlPlane,
    *,
    actor: str,
    reason: str,
    evidence: dict[str, Any],
    now: dt.datetime,
) -> Applied:
    """Set the rollback plan of contract §5 in one transaction, audited with ``evidence``, read
    back; hold the rollout until a person resumes it. Already in force: nothing written.

    Written compare-and-set on the values it read; when another writer got in first it
    reads again, so two rollbacks at once leave one change."""
    plan = rollout.rollback_plan()
    for _ in range(ROLLBACK_ATTEMPTS):
        values = control.read_flags(include_reserved=True)
        state = read_state_from(values)
        current = {k: values[k] for k in FLAG_DEFAULTS}
        if state.rollback_in_force and all(current[k] == v for k, v in plan.items()):
            return Applied(False, {}, current, [], state)
        transition = rollout.record_rollback(state, now, reason)
        changes = {k: v for k, v in transition.flag_changes.items() if current[k] != v}
        expected = {**current, ROLLOUT_STATE_FLAG: values.get(ROLLOUT_STATE_FLAG)}
        try:
            rows = control.set_flags(
                {**changes, ROLLOUT_STATE_FLAG: transition.state.to_json()},
                actor=actor,
                reason=reason,
                evidence=evidence,
                expected=expected,
                now=now,
            )
        except ConcurrentUpdateError:
            continue
        after = _confirm(control, plan)
        return Applied(True, changes, after, [r.id for r in rows], transition.state)
    raise ConcurrentUpdateError(
        f"the flags at {control.where} changed under each of {ROLLBACK_ATTEMPTS} rollback "
        "attempts; run the rollback again"
    )


def record_decision(
    control: ControlPlane,
    applied: Applied,
    *,
    dry_run: bool,
    reason: str,
    source: str,
    evidence: dict[str, Any],
    now: dt.datetime,
) -> RollbackDecision | None:
    """Audit a rollback decision: one a dry run would have made (always), or one that
    changed the flags (a rollback already in force changed nothing: no row)."""
    if not dry_run and not applied.applied:
        return None
    return control.record_decision(
        mode=DRY_RUN if dry_run else APPLIED,
        reason=reason,
        changes=applied.changes,
        source=source,
        evidence={**evidence, "audit_ids": applied.audit_ids} if applied.audit_ids else evidence,
        now=now,
    )


def apply_transition(
    control: ControlPlane,
    *,
    expected_state: rollout.RolloutState,
    expected_flags: Mapping[str, Any],
    flag_changes: Mapping[str, Any],
    next_state: rollout.RolloutState,
    actor: str,
    reason: str,
    evidence: dict[str, Any],
    now: dt.datetime,
) -> Applied:
    """Write a promotion, pause or resume decided on ``expected_*``: compare-and-set, so a
    decision taken on stale values (a rollback landed meanwhile) is refused, not applied."""
    values = control.read_flags(include_reserved=True)
    stale = {k: values.get(k) for k, v in expected_flags.items() if values.get(k) != v}
    refused = ConcurrentUpdateError(
        "the rollout changed since the decision was taken "
        f"(flags now {stale or 'unchanged'}); it will be re-evaluated"
    )
    if stale or read_state_from(values) != expected_state:
        raise refused
    expected = {**expected_flags, ROLLOUT_STATE_FLAG: values.get(ROLLOUT_STATE_FLAG)}
    try:
        rows = control.set_flags(
            {**flag_changes, ROLLOUT_STATE_FLAG: next_state.to_json()},
            actor=actor,
            reason=reason,
            evidence=evidence,
            expected=expected,
            now=now,
        )
    except ConcurrentUpdateError:
        raise refused from None
    after = _confirm(control, flag_changes)
    return Applied(True, dict(flag_changes), after, [r.id for r in rows], next_state)


def load_timeline(control: ControlPlane) -> FlagTimeline:
    """The flag values in force at any instant, from the audit history (contract §5)."""
    return FlagTimeline.from_audit(
        [(r.flag, r.new_value, r.changed_at) for r in control.history() if r.flag in FLAG_DEFAULTS]
    )


# -- health ---------------------------------------------------------------------------------


def lookback(config: triggers.TriggerConfig) -> dt.timedelta:
    """How far back the triggers look: the latency baseline's window before the latency
    window, or the longest trigger window, whichever reaches further."""
    longest = max(
        config.error_rate_duration_s, config.latency_duration_s, config.connection_window_s
    )
    baseline = config.baseline_window_s + config.latency_duration_s
    return dt.timedelta(seconds=max(longest, baseline) + 2 * config.sampling_interval_s)


@dataclass(frozen=True)
class Health:
    """The rollback triggers evaluated at ``verdict.evaluated_at``, over ``samples`` rows."""

    verdict: triggers.HealthVerdict
    samples: int


def read_health(
    control: ControlPlane, now: dt.datetime, config: triggers.TriggerConfig | None = None
) -> Health:
    """Load the samples the triggers need through the control plane and evaluate them: what
    the health sensor, the canary sensor, ``parity rollout`` and the demo all use."""
    config = config or triggers.TriggerConfig()
    samples = control.load_samples(now - lookback(config), now)
    return Health(triggers.evaluate(samples, now, config), len(samples))
