"""The recorder keeps every byte it was sent, under faults, against a real ``websockets``
server on 127.0.0.1.

A full disk is simulated with the kernel's own limit on file size, ``RLIMIT_FSIZE``, in a
subprocess running the recorder: a write that crosses the limit is cut short by the kernel
(a real torn line) and the next one fails with EFBIG, exactly as a full file system cuts a
write short and then fails with ENOSPC. A small tmpfs or a loop device would need
privileges this suite does not assume. ENOSPC itself is checked at the OS boundary too, with
``os.write`` raising it after a short write.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import errno
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from parity.io import recorder as recorder_module
from parity.io.recorder import AppendFile, Recorder
from tests.io.test_recorder import (
    FakeClock,
    connection_from,
    event_text,
    interruptible,
    lines_of,
    recorder,
    until,
    ws_server,
)

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 11, 28, 10, 30, tzinfo=dt.UTC)

RECORDER_UNDER_A_SIZE_LIMIT = textwrap.dedent(
    """
    import asyncio, json, resource, sys
    from pathlib import Path
    from parity.io.recorder import Recorder, RecorderConfig

    url, out, limit, control = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    unlimited = resource.RLIM_INFINITY
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, unlimited))

    async def main():
        config = RecorderConfig(
            url=url, out=out, fsync_interval_s=0.05, backoff_initial_s=0.02,
            backoff_max_s=0.1, progress=False,
        )
        rec = Recorder(config)
        task = asyncio.create_task(rec.run())
        while not (control / "free").exists():
            await asyncio.sleep(0.02)
        resource.setrlimit(resource.RLIMIT_FSIZE, (unlimited, unlimited))  # space freed
        while not (control / "stop").exists():
            await asyncio.sleep(0.02)
        rec.stop()
        stats = await task
        print(json.dumps({
            "written": stats.written, "connections": stats.connections,
            "write_failures": stats.write_failures, "unsaved": stats.unsaved,
        }))

    asyncio.run(main())
    """
)


def test_a_full_disk_loses_nothing_and_keeps_the_connection(tmp_path: Path) -> None:
    out, control = tmp_path / "log", tmp_path / "control"
    control.mkdir()
    limit = 2049
    observed: dict[str, bytes] = {}

    def hour_files() -> list[Path]:
        return [p for p in out.glob("*/*.jsonl")]

    def size() -> int:
        return sum(p.stat().st_size for p in hour_files())

    async def scenario() -> tuple[int, bytes, bytes]:
        async with ws_server() as server:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                RECORDER_UNDER_A_SIZE_LIMIT,
                server.url,
                str(out),
                str(limit),
                str(control),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            conn = await asyncio.wait_for(server.connections.get(), 30)
            for seq in range(1, 41):
                await conn.send(event_text(seq))
            await until(lambda: size() >= limit, timeout=30)
            await asyncio.sleep(0.5)  # the recorder retries meanwhile, and keeps failing
            [path] = hour_files()
            observed["at_limit"] = path.read_bytes()
            (control / "free").touch()
            await until(lambda: path.read_bytes().count(b"\n") >= 40, timeout=30)
            for seq in range(41, 46):  # the same connection still delivers
                await conn.send(event_text(seq))
            await until(lambda: path.read_bytes().count(b"\n") >= 45, timeout=30)
            (control / "stop").touch()
            stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode is not None
            return proc.returncode, stdout, stderr

    code, stdout, stderr = asyncio.run(scenario())
    assert code == 0, stderr.decode()
    at_limit = observed["at_limit"]
    assert len(at_limit) == limit and not at_limit.endswith(b"\n")  # the kernel tore a line
    [path] = hour_files()
    events = lines_of(path)  # every line parses: the torn line was completed, not followed
    assert [e["seq"] for e in events] == list(range(1, 46))  # none lost, none twice
    stats = json.loads(stdout.decode().splitlines()[-1])
    assert stats["connections"] == 1 and stats["write_failures"] >= 1
    assert (stats["written"], stats["unsaved"]) == (45, 0)
    assert b"cannot write" in stderr  # the operator is told while it lasts


def test_enospc_after_a_short_write_completes_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    full = {"on": True, "calls": 0}

    def disk(fd: int, data: bytes | memoryview) -> int:
        full["calls"] += 1
        if full["on"]:
            if full["calls"] == 1:
                return real_write(fd, bytes(data[:7]))  # a short write, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    path = tmp_path / "10.jsonl"
    log = AppendFile(path)
    monkeypatch.setattr(recorder_module.os, "write", disk)
    with pytest.raises(OSError) as caught:
        log.write(b'{"seq":1,"note":"first"}\n')
    assert caught.value.errno == errno.ENOSPC
    with pytest.raises(OSError):
        log.write(b'{"seq":2}\n')  # taken and kept behind the first, not interleaved
    assert path.read_bytes() == b'{"seq":'
    full["on"] = False
    log.finish()
    log.write(b'{"seq":3}\n')
    monkeypatch.undo()
    log.close()
    assert path.read_bytes() == b'{"seq":1,"note":"first"}\n{"seq":2}\n{"seq":3}\n'


def test_an_oversized_message_is_kept_truncated_and_the_connection_stays(
    tmp_path: Path,
) -> None:
    clock = FakeClock(NOW)
    big = b'{"blob": "' + b"x" * (recorder_module.MAX_MESSAGE_BYTES + 10) + b'"}'

    async def scenario() -> Recorder:
        async with ws_server() as server:
            rec = recorder(tmp_path, server.url, clock)
            task = asyncio.create_task(rec.run())
            conn = await asyncio.wait_for(server.connections.get(), 5)
            await conn.send(event_text(1))
            await conn.send(big.decode())
            await conn.send(event_text(2))
            await until(lambda: rec.stats.written + rec.stats.rejected == 3, timeout=30)
            rec.stop()
            await asyncio.wait_for(task, 5)
            return rec

    rec = asyncio.run(scenario())
    assert rec.stats.connections == 1 and (rec.stats.written, rec.stats.rejected) == (2, 1)
    assert [e["seq"] for e in lines_of(tmp_path / "2026-11-28" / "10.jsonl")] == [1, 2]
    [reject] = lines_of(tmp_path / "rejects" / "2026-11-28.jsonl")
    assert reject["reason"] == "too_large" and reject["size"] == len(big)
    head = base64.b64decode(reject["head_base64"])
    assert head == big[: recorder_module.REJECT_HEAD_BYTES]


def test_a_message_over_the_transport_limit_leaves_a_reject_and_a_reconnect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recorder_module, "MAX_TRANSPORT_BYTES", 1 << 20)
    monkeypatch.setattr(recorder_module, "MAX_MESSAGE_BYTES", 256 << 10)
    clock = FakeClock(NOW)

    async def scenario() -> Recorder:
        async with ws_server() as server:
            rec = recorder(tmp_path, server.url, clock)
            task = asyncio.create_task(rec.run())
            first = await asyncio.wait_for(server.connections.get(), 5)
            await first.send(event_text(1))
            await first.send("y" * (2 << 20))
            second = await asyncio.wait_for(server.connections.get(), 10)
            await second.send(event_text(2))
            await until(lambda: rec.stats.written == 2, timeout=10)
            rec.stop()
            await asyncio.wait_for(task, 5)
            return rec

    rec = asyncio.run(scenario())
    assert rec.stats.connections == 2
    assert [e["seq"] for e in lines_of(tmp_path / "2026-11-28" / "10.jsonl")] == [1, 2]
    [reject] = lines_of(tmp_path / "rejects" / "2026-11-28.jsonl")
    assert reject["reason"] == "over_transport_limit" and reject["limit"] == 1 << 20
    assert reject["detail"]  # the library's words: how large, over which limit


def test_a_text_frame_that_is_not_utf8_is_a_reject_not_a_closed_connection(
    tmp_path: Path,
) -> None:
    clock = FakeClock(NOW)

    async def scenario() -> Recorder:
        async with ws_server() as server:
            rec = recorder(tmp_path, server.url, clock)
            task = asyncio.create_task(rec.run())
            conn = await asyncio.wait_for(server.connections.get(), 5)
            await conn.send(event_text(1))
            # A producer bug: a text frame whose bytes are not UTF-8 (the sending library
            # validates nothing at this level).
            conn.protocol.send_text(b'{"s": "\xff"}')
            await conn.send(event_text(2))
            await until(lambda: rec.stats.written + rec.stats.rejected == 3, timeout=10)
            rec.stop()
            await asyncio.wait_for(task, 5)
            return rec

    rec = asyncio.run(scenario())
    assert rec.stats.connections == 1
    assert [e["seq"] for e in lines_of(tmp_path / "2026-11-28" / "10.jsonl")] == [1, 2]
    [reject] = lines_of(tmp_path / "rejects" / "2026-11-28.jsonl")
    assert reject["reason"] == "not_utf8"
    assert base64.b64decode(reject["raw_base64"]) == b'{"s": "\xff"}'


def test_stopping_while_the_disk_refuses_counts_the_unsaved_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rec = recorder(tmp_path, "ws://127.0.0.1:9/never", FakeClock(NOW))

    def full(fd: int, data: bytes | memoryview) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(recorder_module.os, "write", full)
    with pytest.raises(OSError):
        rec.handle(event_text(1))
    assert rec.pending
    rec.stop()
    stats = asyncio.run(rec.run())
    assert (stats.written, stats.unsaved) == (1, 1)
    assert "stopping with a line unwritten" in caplog.text


def test_a_token_in_the_producer_url_is_never_logged_or_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = "TkRec0rder9x7q"
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the class is not the point
        recorder(tmp_path, f"http://127.0.0.1:1/events?token={token}", FakeClock(NOW))
    assert token not in str(caught.value) and "ws://" in str(caught.value)

    caplog.set_level("INFO")
    url = f"ws://alice:{token}@127.0.0.1:1/events/{token}?token={token}"
    rec = recorder(tmp_path, url, FakeClock(NOW))

    async def scenario() -> None:
        task = asyncio.create_task(rec.run())
        await until(lambda: rec.stats.connection_failures >= 2)
        rec.stop()
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert "reconnecting" in caplog.text and "127.0.0.1" in caplog.text
    assert token not in caplog.text


def test_the_record_command_exits_3_when_it_stops_with_lines_unsaved(tmp_path: Path) -> None:
    """``parity record`` stopped (Ctrl-C) while the disk refuses a line: the line is lost,
    so the command says so and exits 3 (infrastructure), not 0."""
    import signal

    out = tmp_path / "log"
    limit = 2049
    script = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))\n"
        "from parity.app.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )

    def size() -> int:
        return sum(p.stat().st_size for p in out.glob("*/*.jsonl"))

    async def scenario() -> tuple[int, bytes, bytes]:
        async with ws_server() as server:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                script,
                "record",
                server.url,
                "--out",
                str(out),
                "--max-backoff",
                "0.1",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=tmp_path,
                # Ctrl-C reaches it even when this suite runs as a background job (which
                # starts with SIGINT ignored, and children inherit that).
                preexec_fn=interruptible,
            )
            try:
                conn = await connection_from(server, proc, 30)
                for seq in range(1, 41):
                    await conn.send(event_text(seq))
                await until(lambda: size() >= limit, timeout=30)
                proc.send_signal(signal.SIGINT)  # Ctrl-C while the disk refuses
                stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.communicate()
            assert proc.returncode is not None
            return proc.returncode, stdout, stderr

    code, stdout, stderr = asyncio.run(scenario())
    assert code == 3, stderr.decode()
    assert b"stopped with 1 line(s) that could not be written" in stderr
    assert b"Traceback" not in stderr
    assert b"recorded " in stdout
