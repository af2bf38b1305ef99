"""What ``parity demo`` found: each hour's colour, and per injected fault what was injected
against what the reconciliation and the health triggers detected (the summary file and
the terminal table)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from parity.app.demo import TrafficStats
from parity.app.demo_plan import DemoPlan
from parity.core import partitions

LATENCY_SLO_MS = 500.0


def hours_summary(outcomes: Sequence[Any]) -> dict[str, Any]:
    hours = {}
    for o in outcomes:
        report = o.report or {}
        errors = sorted(c["check"] for c in o.failed_checks if c["severity"] == "ERROR")
        warnings = sorted(c["check"] for c in o.failed_checks if c["severity"] != "ERROR")
        hours[o.partition] = {
            "colour": "red" if errors or not o.success else ("green" if o.clean else "yellow"),
            "failed_error_checks": errors,
            "failed_warn_checks": warnings,
            "ws_events": report.get("ws_events"),
            "supabase_events": report.get("supabase_events"),
            "expected_in_supabase": report.get("expected_in_supabase"),
            "matched": report.get("matched"),
            "missing_in_supabase": report.get("missing_in_supabase"),
            "duplicates_ws": report.get("duplicates_ws"),
            "invalid_checksums_supabase": report.get("invalid_checksums_supabase"),
            "checksum_mismatches": report.get("checksum_mismatches"),
            "latency_p95_ms": (report.get("latency_ms") or {}).get("p95"),
            "error": o.error,
        }
    return hours


def detection_summary(
    plan: DemoPlan, stats: TrafficStats, outcomes: Sequence[Any], health: dict[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """Per fault kind: what was injected, what the reconciliation / triggers found."""
    reports = {o.partition: (o.report or {}) for o in outcomes}
    failed = {o.partition: {c["check"] for c in o.failed_checks} for o in outcomes}
    missing = {(str(s), int(q)) for r in reports.values() for s, q in (r.get("missing_keys") or [])}
    dropped = set(stats.dropped)
    critical = dropped & set(plan.faults.dropped_critical)
    spike_hour = partitions.format_key(plan.faults.latency_spike[0])
    spike_p95 = (reports.get(spike_hour, {}).get("latency_ms") or {}).get("p95")
    duplicates = sum(int(r.get("duplicates_ws") or 0) for r in reports.values())
    invalid = sum(int(r.get("invalid_checksums_supabase") or 0) for r in reports.values())
    mismatches = sum(int(r.get("checksum_mismatches") or 0) for r in reports.values())
    critical_lost = sum(
        int(((r.get("by_category") or {}).get("CRITICAL") or {}).get("missing_in_supabase") or 0)
        for r in reports.values()
    )
    by_key = plan.by_key()
    out = {
        "dropped_writes": {
            "injected": len(dropped),
            "injected_critical": len(critical),
            "detected": len(dropped & missing),
            "detected_critical": min(critical_lost, len(critical & missing)),
            "other_missing": len(missing - dropped),
            "hours": sorted({partitions.format_key(by_key[k].at) for k in dropped}),
            "how": "report missing_keys; no_events_lost (WARN, repaired) and "
            "no_critical_events_lost (ERROR, rollback)",
            "ok": bool(dropped)
            and dropped <= missing
            and bool(critical)
            and critical_lost > 0
            and "no_critical_events_lost" in set().union(*failed.values()),
        },
        "retry_duplicates": {
            "injected": len(stats.resent),
            "detected": duplicates,
            "how": "report duplicates_ws (identical retry copies: ws_keys_are_unique passes)",
            "ok": bool(stats.resent) and duplicates == len(stats.resent),
        },
        "corrupted_payload": {
            "injected": len(stats.corrupted),
            "detected": invalid,
            "checksum_mismatches": mismatches,
            "how": "report invalid_checksums_supabase; supabase_checksums_are_valid (ERROR)",
            "ok": bool(stats.corrupted)
            and invalid >= len(stats.corrupted)
            and "supabase_checksums_are_valid" in set().union(*failed.values()),
        },
        "latency_spike": {
            "injected": spike_hour,
            "window": [t.isoformat() for t in plan.faults.latency_spike],
            "detected": None if spike_p95 is None else round(spike_p95),
            "how": f"latency_p95_within_slo (WARN, SLO {LATENCY_SLO_MS:g} ms)",
            "ok": spike_p95 is not None
            and spike_p95 > LATENCY_SLO_MS
            and "latency_p95_within_slo" in failed.get(spike_hour, set()),
        },
    }
    if health is not None:
        out["supabase_outage"] = {
            "injected": f"down since {plan.faults.outage_start:%H:%M:%S} "
            f"({stats.outage_store_failures} failed store calls)",
            "detected": {k: v["state"] for k, v in health["triggers"].items()},
            "rollback_fired": health["fired"],
            "how": "health triggers over delivery_metrics, then the rollback",
            "ok": bool(health["breached"] and health["fired"]),
        }
    return out


def lost_hours(plan: DemoPlan) -> list[str]:
    """The hours the demo damaged by loss (dropped writes)."""
    by_key = plan.by_key()
    return sorted({partitions.format_key(by_key[k].at) for k in plan.faults.dropped})


def triggers_line(health: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v['state']}" for k, v in health["triggers"].items())


def fault_line(kind: str, d: dict[str, Any]) -> str:
    if kind == "dropped_writes":
        return (
            f"{d['injected']} dropped ({d['injected_critical']} CRITICAL) in "
            f"{', '.join(d['hours'])} -> {d['detected']} missing "
            f"({d['detected_critical']} CRITICAL)"
        )
    if kind == "latency_spike":
        return f"{d['window'][0][11:16]}-{d['window'][1][11:16]} -> p95 {d['detected']} ms"
    if kind == "supabase_outage":
        breached = [k for k, v in d["detected"].items() if v == "BREACH"]
        fired = "rollback fired" if d["rollback_fired"] else "no rollback"
        return f"{d['injected']} -> breach: {', '.join(breached) or 'none'}; {fired}"
    return f"{d['injected']} -> {d['detected']}"
