"""When a reconciled hour is repaired: the decision behind the repair loop (pure).

An hour with events missing from Supabase (within the cohort, any category, any number)
is backfilled from the log and reconciled again. What the decision reads is the hour's
latest reconciliation (how many keys are missing, and a digest of which) and the backfills
already made of the hour; never the rollback that may have preceded the loss.

Guards against a loop:

- at most ``max_attempts`` automatic repairs of the same set of missing keys (a different
  set, e.g. a later replay that filled some keys, is a new repair);
- a backfill that was asked for exactly these keys and wrote none of them proves that no
  backfill can (conflicting copies, invalid checksums, keys the log does not have, a key
  Supabase holds outside the hour, rows the store refuses): the hour is *impossible*, and
  a person is told why;
- so does a backfill that wrote some of its keys and could not write the others, when the
  keys still missing are exactly those others: they are not tried a second time;
- nothing is decided while a repair of the hour is running, or while a backfill is newer
  than the hour's latest reconciliation (the reconciliation after it decides);
- nothing is repaired before ``settle`` has passed since the hour's end: producers replay
  their buffers, and a repair made before that would race them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from parity.core.errors import ConfigurationError

#: Metadata keys of the reconciliation and of the backfill that the loop reads.
MISSING_IN_SUPABASE = "missing_in_supabase"
MISSING_KEYS_DIGEST = "missing_keys_digest"
#: The digest of the keys a backfill was asked for and did not send (absent when none).
UNWRITTEN_KEYS_DIGEST = "unwritten_keys_digest"
REPAIR_STATE = "repair_state"
REPAIR_REASON = "repair_reason"
#: Why a backfill could not write a key, as the backfill counts them.
UNWRITABLE = {
    "conflicts": "conflicting copies (Supabase holds other content, or the log's copies disagree)",
    "invalid": "invalid checksums in the log",
    "not_in_log": "keys the log does not have",
    "skipped_existing": "keys Supabase already holds outside the hour",
    "refused": "rows the store refused (the backfill's refused_sample says why)",
}


class RepairState(StrEnum):
    NONE = "none"  # nothing missing, nothing was repaired
    PENDING = "pending"  # missing events; a repair is due, waiting or running
    DONE = "done"  # nothing missing after a repair
    IMPOSSIBLE = "impossible"  # missing events no backfill can write; a person is told why


@dataclass(frozen=True)
class RepairPolicy:
    """``max_attempts`` automatic repairs per hour and set of missing keys; ``settle``
    after the hour's end before the first."""

    max_attempts: int = 3
    settle: dt.timedelta = dt.timedelta(minutes=10)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError(
                f"PARITY_REPAIR_MAX_ATTEMPTS={self.max_attempts}: must be at least 1"
            )
        if self.settle < dt.timedelta(0):
            raise ConfigurationError(
                f"PARITY_REPAIR_SETTLE_MINUTES={self.settle.total_seconds() / 60:g}: "
                "must not be negative"
            )


@dataclass(frozen=True)
class Attempt:
    """One backfill of the hour: which missing keys it was asked for (their digest; None
    when it recomputed them), what it wrote and what it could not."""

    order: int  # the event log's storage id: later attempts have larger ones
    digest: str | None
    written: int
    unwritable: Mapping[str, int] = field(default_factory=dict)
    #: Digest of the keys it was asked for and could not write (None: it wrote them all).
    unwritten_digest: str | None = None

    @classmethod
    def from_metadata(cls, order: int, entry: Mapping[str, Any]) -> Attempt:
        """From the backfill's per-partition metadata entry."""
        return cls(
            order=order,
            digest=entry.get(MISSING_KEYS_DIGEST),
            written=int(entry.get("written") or 0),
            unwritable={k: int(entry.get(k) or 0) for k in UNWRITABLE if entry.get(k)},
            unwritten_digest=entry.get(UNWRITTEN_KEYS_DIGEST),
        )


@dataclass(frozen=True)
class Decision:
    """The repair state of an hour and why; ``repair`` when a backfill should start now."""

    state: RepairState
    reason: str
    repair: bool = False
    attempt: int = 0  # the number the next (or running) automatic attempt has


def keys_digest(keys: Iterable[Sequence[Any]]) -> str:
    """A short, order-independent digest of (stream, seq) keys: one set of missing keys."""
    text = "\n".join(sorted(f"{int(k[1])}\x00{k[0]}" for k in keys))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def unwritten_digest(asked: Iterable[Sequence[Any]], sent: Iterable[Sequence[Any]]) -> str | None:
    """The digest of the keys a backfill was ``asked`` for and did not send, or None when
    it sent them all: what will still be missing after it, if nothing else changes."""
    left = {(str(k[0]), int(k[1])) for k in asked} - {(str(k[0]), int(k[1])) for k in sent}
    return keys_digest(left) if left else None


def why_unwritable(attempt: Attempt) -> str:
    parts = [f"{n} {UNWRITABLE[k]}" for k, n in attempt.unwritable.items() if n]
    return "; ".join(parts) or "the backfill found nothing it could write"


def decide(
    *,
    missing: int,
    digest: str,
    window_end: dt.datetime,
    reconciled_order: int,
    attempts: Sequence[Attempt],
    policy: RepairPolicy,
    now: dt.datetime,
    automatic_runs: int = 0,
    running: bool = False,
) -> Decision:
    """The hour's repair state from its latest reconciliation (``missing`` keys whose
    digest is ``digest``, recorded at storage id ``reconciled_order``) and its backfills.

    ``automatic_runs``: finished repair runs launched for this set of keys (failed ones
    included); ``running``: one is queued or running now.
    """
    if missing == 0:
        if attempts:
            return Decision(RepairState.DONE, "nothing missing after the repair")
        return Decision(RepairState.NONE, "nothing missing")
    same = [a for a in attempts if a.digest == digest]
    made = max(len(same), automatic_runs)
    if same and same[-1].written == 0:
        return Decision(
            RepairState.IMPOSSIBLE,
            f"{missing} missing; a backfill of exactly these keys wrote none of them: "
            f"{why_unwritable(same[-1])}. A person must look (parity backfill --dry-run shows "
            "each key and why)",
            attempt=made,
        )
    rest = next((a for a in reversed(attempts) if a.unwritten_digest == digest), None)
    if rest is not None:
        return Decision(
            RepairState.IMPOSSIBLE,
            f"{missing} missing; a backfill wrote {rest.written} of the hour's missing events "
            f"and could not write exactly these: {why_unwritable(rest)}. A person must look "
            "(parity backfill --dry-run shows each key and why)",
            attempt=made,
        )
    if made >= policy.max_attempts:
        return Decision(
            RepairState.IMPOSSIBLE,
            f"{missing} still missing after {made} automatic repairs of these keys "
            f"(limit {policy.max_attempts}, PARITY_REPAIR_MAX_ATTEMPTS)",
            attempt=made,
        )
    if running:
        return Decision(RepairState.PENDING, f"{missing} missing; repair running", attempt=made)
    if attempts and max(a.order for a in attempts) > reconciled_order:
        return Decision(
            RepairState.PENDING,
            f"{missing} missing at the last reconciliation; a backfill since then awaits "
            "the next one",
            attempt=made,
        )
    due = window_end + policy.settle
    if now < due:
        return Decision(
            RepairState.PENDING,
            f"{missing} missing; repair at {due:%Y-%m-%d %H:%M} UTC, once producers had "
            f"{policy.settle.total_seconds() / 60:g} minutes to replay their buffers",
            attempt=made + 1,
        )
    return Decision(
        RepairState.PENDING,
        f"{missing} missing; repair {made + 1} of at most {policy.max_attempts}",
        repair=True,
        attempt=made + 1,
    )
