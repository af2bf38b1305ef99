"""Run a command and report its own wall time and peak memory, as one JSON line:
``{"wait4": {...}, "inner": <the command's last stdout line, parsed when it is JSON>}``.

    python -m benchmarks.wait4 CMD [ARGS...]

- ``peak_rss_mb``: the command's peak RSS from ``os.wait4`` (``resource.getrusage(
  RUSAGE_CHILDREN)`` keeps the maximum over every child a process ever waited for; ``wait4``
  gives this one child's figure). A process tree's forked workers (``parity.parallel``)
  have their own RSS, mostly pages shared with the parent, which this figure does not add.
- ``peak_tree_pss_mb``: the largest sum of PSS (proportional set size: shared pages split
  between the processes sharing them) over the command and its descendants, sampled every
  0.5 s from ``/proc/<pid>/smaps_rollup``: what the tree really takes from the machine.

``PARITY_BENCH_RSS_CAP_MB``, when set, kills the command's whole process group once the
tree's PSS (or, without smaps_rollup, the command's RSS) passes that many MB, so a run that
would exhaust a shared machine's memory ends early; it is reported as
``killed_at_rss_cap_mb``. The exit code is passed through.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

SAMPLE_S = 0.5


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text()
            out += [int(x) for x in text.split()]
    except OSError:
        pass
    return out


def _tree(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        current = todo.pop()
        seen.append(current)
        todo += _children(current)
    return seen


def _kb(path: str, field: str) -> int | None:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def tree_pss_kb(pid: int) -> int | None:
    total, any_seen = 0, False
    for member in _tree(pid):
        pss = _kb(f"/proc/{member}/smaps_rollup", "Pss:")
        if pss is not None:
            total, any_seen = total + pss, True
    return total if any_seen else None


def main(cmd: list[str]) -> int:
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None
    cap_kb = int(os.environ.get("PARITY_BENCH_RSS_CAP_MB") or 0) * 1024
    killed: list[float] = []
    peak_pss = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(SAMPLE_S):
            pss = tree_pss_kb(proc.pid)
            used = pss if pss is not None else _kb(f"/proc/{proc.pid}/status", "VmRSS:")
            if used is None:
                return
            peak_pss[0] = max(peak_pss[0], pss or 0)
            if cap_kb and used > cap_kb:
                killed.append(time.perf_counter() - began)
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the command and its forked workers
                except ProcessLookupError:
                    pass
                return

    threading.Thread(target=watch, daemon=True).start()
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    wall = time.perf_counter() - began
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        inner = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        inner = None
    stats = {
        "wall_s": round(wall, 3),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: kilobytes
        "peak_tree_pss_mb": round(peak_pss[0] / 1024, 1) if peak_pss[0] else None,
        "user_s": round(usage.ru_utime, 2),
        "sys_s": round(usage.ru_stime, 2),
        "exit_code": proc.returncode,
    }
    if killed:
        stats["killed_at_rss_cap_mb"] = cap_kb // 1024
        stats["killed_after_s"] = round(killed[0], 1)
    print(json.dumps({"wait4": stats, "inner": inner}))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
