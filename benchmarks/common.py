"""What the benchmarks share: the event-type mix of a generated hour, and reading and
resetting the process's peak RSS."""

from __future__ import annotations

from pathlib import Path

#: event_type, category by the default rules, share of the hour's events.
TYPES = (
    ("system.health", "CRITICAL", 0.15),
    ("error.raised", "CRITICAL", 0.08),
    ("perf.alert", "CRITICAL", 0.04),
    ("connection.status", "CRITICAL", 0.03),
    ("debug.log", "INFORMATIONAL", 0.25),
    ("metrics.verbose", "INFORMATIONAL", 0.2),
    ("session.started", "INFORMATIONAL", 0.1),
    ("user.action", "INFORMATIONAL", 0.1),
    ("deprecated.x", "LEGACY", 0.049),
    ("custom.unmapped", "INFORMATIONAL", 0.001),  # no rule matches: unclassified
)
#: Streams with a fixed name; the rest of a generated hour's streams are sessions.
NAMED_STREAMS = ("health", "errors", "perf", "connection", "metrics", "debug")


def status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS, VmHWM), or -1 where there is none."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return -1
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def reset_peak() -> bool:
    """Linux: writing 5 to clear_refs resets VmHWM (peak RSS) to the current RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False
