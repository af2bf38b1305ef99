"""The kernel built with AddressSanitizer and UBSan, fuzzed for a bounded time
(``fuzz_kernel.py``): no memory error, no undefined behaviour, no verdict unlike Python's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SOURCES = ["_jcs.c", "_canon.c", "_sha256.c"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]  # noqa: E501


def _compiler() -> str | None:
    cc = os.environ.get("CC", "gcc")
    return shutil.which(cc)


def _python_headers() -> Path | None:
    include = Path(sysconfig.get_paths()["include"])
    return include if (include / "Python.h").exists() else None


def _runtime(cc: str, name: str) -> str | None:
    found = subprocess.run([cc, f"-print-file-name={name}"], capture_output=True, text=True)
    path = found.stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


def test_kernel_under_asan_and_ubsan(tmp_path: Path) -> None:
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler: the sanitizer build of the kernel needs one")
    include = _python_headers()
    if include is None:
        pytest.skip("no Python headers (Python.h): the kernel cannot be built here")
    asan = _runtime(cc, "libasan.so")
    if asan is None:
        pytest.skip(f"{cc} has no AddressSanitizer runtime (libasan.so)")
    native = ROOT / "parity" / "io" / "native"
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    library = tmp_path / f"_jcs{suffix}"
    build = [
        cc,
        "-shared",
        "-fPIC",
        "-O1",
        "-g",
        "-std=gnu11",
        *SANITIZE,
        f"-I{include}",
        *(str(native / s) for s in SOURCES),
        "-ldl",
        "-o",
        str(library),
    ]
    subprocess.run(build, check=True, capture_output=True, timeout=120)
    env = {
        **os.environ,
        "LD_PRELOAD": asan,
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
        "PYTHONPATH": str(ROOT),
    }
    run = subprocess.run(
        [sys.executable, "-m", "tests.io.native.fuzz_kernel", str(library), "20000", "11"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    print(run.stdout)
    assert "0 disagreements" in run.stdout
    assert "ERROR: AddressSanitizer" not in run.stderr
    assert "runtime error" not in run.stderr
