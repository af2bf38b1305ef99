"""The recorder against a real ``websockets`` server on 127.0.0.1.

The server side is driven by the test: each accepted connection is handed over through a
queue, so the test decides what is sent on which connection and when it is dropped. The
recorder's clock is fake, so an hour boundary is crossed on demand.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve

from parity.app.cli import cli
from parity.core.classify import load_rules
from parity.core.events import make_event
from parity.io.recorder import Recorder, RecorderConfig
from parity.io.wslog import read_window
from tests.waiting import until

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 11, 28, 10, 59, 59, 500000, tzinfo=dt.UTC)


class FakeClock:
    def __init__(self, start: dt.datetime = T0) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now


class Server:
    def __init__(self) -> None:
        self.connections: asyncio.Queue[ServerConnection] = asyncio.Queue()
        self.url = ""

    async def _handle(self, connection: ServerConnection) -> None:
        await self.connections.put(connection)
        await connection.wait_closed()


def interruptible() -> None:
    """In a child before exec: SIGINT back to its default (see its callers)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def connection_from(server: Server, proc: asyncio.subprocess.Process, timeout: float) -> Any:
    """The first connection to ``server``; when none comes, the child's stderr in the
    failure (a child that failed at start-up says why)."""
    try:
        return await asyncio.wait_for(server.connections.get(), timeout)
    except TimeoutError:
        if proc.returncode is None:
            proc.kill()
        _, err = await proc.communicate()
        raise AssertionError(
            f"the child did not connect within {timeout} s (exit {proc.returncode}): "
            + err.decode(errors="replace")[-3000:]
        ) from None


@asynccontextmanager
async def ws_server() -> AsyncIterator[Server]:
    server = Server()
    async with serve(server._handle, "127.0.0.1", 0) as ws:
        port = next(iter(ws.sockets)).getsockname()[1]
        server.url = f"ws://127.0.0.1:{port}/events"
        yield server


def event_text(seq: int, stream: str = "health") -> str:
    emitted = dt.datetime(2026, 11, 28, 10, 30, tzinfo=dt.UTC) + dt.timedelta(seconds=seq)
    event = make_event(stream, seq, "system.health", emitted, {"seq": seq, "ok": True})
    return orjson.dumps(event.to_json_dict()).decode()


def recorder(out: Path, url: str, clock: FakeClock, **overrides: object) -> Recorder:
    cfg = RecorderConfig(
        url=url,
        out=out,
        fsync_interval_s=0.05,
        backoff_initial_s=0.01,
        backoff_max_s=0.05,
        progress=False,
    )
    for key, value in overrides.items():
        object.__setattr__(cfg, key, value)
    return Recorder(cfg, clock=clock)


def lines_of(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return [orjson.loads(line) for line in data.splitlines()]


def test_rotates_across_an_hour_boundary(tmp_path: Path) -> None:
    clock = FakeClock()

    async def scenario() -> None:
        async with ws_server() as server:
            rec = recorder(tmp_path, server.url, clock)
            task = asyncio.create_task(rec.run())
            conn = await asyncio.wait_for(server.connections.get(), 5)
            for seq in (1, 2, 3):
                await conn.send(event_text(seq))
            await until(lambda: rec.stats.written == 3)
            clock.now = dt.datetime(2026, 11, 28, 11, 0, 0, 250000, tzinfo=dt.UTC)
            for seq in (4, 5, 6):
                await conn.send(event_text(seq))
            await until(lambda: rec.stats.written == 6)
            rec.stop()
            await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    ten, eleven = tmp_path / "2026-11-28" / "10.jsonl", tmp_path / "2026-11-28" / "11.jsonl"
    assert [e["seq"] for e in lines_of(ten)] == [1, 2, 3]
    assert {e["logged_at"] for e in lines_of(ten)} == {"2026-11-28T10:59:59.500000Z"}
    assert [e["seq"] for e in lines_of(eleven)] == [4, 5, 6]
    assert {e["logged_at"] for e in lines_of(eleven)} == {"2026-11-28T11:00:00.250000Z"}
    # The reader accepts what the recorder wrote, checksums included.
    start = dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)
    read = read_window(tmp_path, start, start + dt.timedelta(hours=1), classifier=load_rules())
    assert read.events.num_rows == 6 and read.quarantined_lines == 0
    assert all(read.events["checksum_valid"].to_pylist())


def test_reconnects_after_a_dropped_connection(tmp_path: Path) -> None:
    clock = FakeClock(dt.datetime(2026, 11, 28, 10, 30, tzinfo=dt.UTC))

    async def scenario() -> Recorder:
        async with ws_server() as server:
            rec = recorder(tmp_path, server.url, clock)
            task = asyncio.create_task(rec.run())
            first = await asyncio.wait_for(server.connections.get(), 5)
            for seq in range(1, 51):
                await first.send(event_text(seq))
            await until(lambda: rec.stats.written == 50)
            first.transport.abort()  # mid-stream, no closing handshake
            second = await asyncio.wait_for(server.connections.get(), 5)
            for seq in range(51, 101):
                await second.send(event_text(seq))
            await until(lambda: rec.stats.written == 100)
            rec.stop()
            await asyncio.wait_for(task, 5)
            return rec

    rec = asyncio.run(scenario())
    assert rec.stats.connections == 2
    events = lines_of(tmp_path / "2026-11-28" / "10.jsonl")  # every line parses
    assert [e["seq"] for e in events] == list(range(1, 101))  # none lost, none twice


def test_malformed_messages_go_to_rejects(tmp_path: Path) -> None:
    clock = FakeClock(dt.datetime(2026, 11, 28, 10, 30, tzinfo=dt.UTC))

    async def scenario() -> Recorder:
        async with ws_server() as server:
            rec = recorder(tmp_path, server.url, clock)
            task = asyncio.create_task(rec.run())
            conn = await asyncio.wait_for(server.connections.get(), 5)
            await conn.send(event_text(1))
            await conn.send("not json {")
            await conn.send("[1, 2]")
            await conn.send(b"\xff\xfe binary")
            await conn.send(b'{"stream": "x", "big": 123456789012345678901234567890}')
            await conn.send(event_text(2))
            await until(lambda: rec.stats.written + rec.stats.rejected == 6)
            rec.stop()
            await asyncio.wait_for(task, 5)
            return rec

    rec = asyncio.run(scenario())
    assert (rec.stats.written, rec.stats.rejected) == (3, 3)
    events = (tmp_path / "2026-11-28" / "10.jsonl").read_bytes().splitlines()
    assert len(events) == 3
    assert b'"big":123456789012345678901234567890' in events[1]  # kept exactly
    rejects = lines_of(tmp_path / "rejects" / "2026-11-28.jsonl")
    assert [r["reason"] for r in rejects] == ["invalid_json", "not_an_object", "not_utf8"]
    assert rejects[0]["raw"] == "not json {"
    assert rejects[2]["raw_base64"] == "//4gYmluYXJ5"
    assert {r["received_at"] for r in rejects} == {"2026-11-28T10:30:00.000000Z"}


def test_a_torn_last_line_is_isolated_not_modified(tmp_path: Path) -> None:
    clock = FakeClock(dt.datetime(2026, 11, 28, 10, 30, tzinfo=dt.UTC))
    path = tmp_path / "2026-11-28" / "10.jsonl"
    path.parent.mkdir(parents=True)
    before = (event_text(1) + "\n" + event_text(2)[:40]).encode()
    path.write_bytes(before)

    async def scenario() -> None:
        async with ws_server() as server:
            rec = recorder(tmp_path, server.url, clock)
            task = asyncio.create_task(rec.run())
            conn = await asyncio.wait_for(server.connections.get(), 5)
            await conn.send(event_text(3))
            await until(lambda: rec.stats.written == 1)
            rec.stop()
            await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    data = path.read_bytes()
    assert data.startswith(before + b"\n")  # earlier bytes untouched
    start = dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)
    read = read_window(tmp_path, start, start + dt.timedelta(hours=1), classifier=load_rules())
    assert sorted(read.events["seq"].to_pylist()) == [1, 3]
    assert read.quarantined_lines == 1  # the torn fragment, as its own line


def test_keeps_retrying_until_the_server_appears(tmp_path: Path) -> None:
    clock = FakeClock(dt.datetime(2026, 11, 28, 10, 30, tzinfo=dt.UTC))
    sleeps: list[float] = []

    async def record_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.sleep(0.001)

    async def scenario() -> None:
        cfg = RecorderConfig(
            url="ws://127.0.0.1:9/",
            out=tmp_path,
            backoff_initial_s=1.0,
            backoff_max_s=30.0,
            progress=False,
        )
        rec = Recorder(cfg, clock=clock, sleep=record_sleep)
        task = asyncio.create_task(rec.run())
        await until(lambda: len(sleeps) >= 7)
        rec.stop()
        await asyncio.wait_for(task, 5)
        assert rec.stats.connection_failures >= 7

    asyncio.run(scenario())
    assert sleeps[:7] == [1, 2, 4, 8, 16, 30, 30]


def test_progress_is_shown_when_asked(tmp_path: Path) -> None:
    clock = FakeClock(dt.datetime(2026, 11, 28, 10, 30, tzinfo=dt.UTC))
    stream = io.StringIO()

    async def scenario() -> None:
        async with ws_server() as server:
            cfg = RecorderConfig(url=server.url, out=tmp_path, fsync_interval_s=0.02, progress=True)
            rec = Recorder(cfg, clock=clock, progress_stream=stream)
            task = asyncio.create_task(rec.run())
            conn = await asyncio.wait_for(server.connections.get(), 5)
            await conn.send(event_text(1))
            await until(lambda: "10.jsonl" in stream.getvalue())
            rec.stop()
            await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert "events/s" in stream.getvalue()
    quiet = Recorder(RecorderConfig(url="ws://127.0.0.1:9/", out=tmp_path), progress_stream=stream)
    assert not quiet.show_progress  # not a terminal


def test_record_command_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    from click.testing import CliRunner

    # Its options are checked before anything connects.
    refused = CliRunner().invoke(cli, ["record", "ws://h/", "--max-backoff", "0"])
    assert refused.exit_code == 2 and "--max-backoff" in refused.output

    script = "import sys; from parity.app.cli import main; sys.exit(main(sys.argv[1:]))"

    async def scenario() -> tuple[int, bytes, bytes]:
        async with ws_server() as server:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                script,
                "record",
                server.url,
                "--out",
                str(tmp_path),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=tmp_path,
                # Ctrl-C reaches it even when this suite runs as a background job (which
                # starts with SIGINT ignored, and children inherit that).
                preexec_fn=interruptible,
                env={**os.environ, "PYTHONWARNINGS": "error"},
            )
            try:
                conn = await connection_from(server, proc, 20)
                await conn.send(event_text(1))
                await asyncio.sleep(0.2)
                proc.send_signal(signal.SIGINT)  # Ctrl-C while recording
                out, err = await asyncio.wait_for(proc.communicate(), 20)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.communicate()
            assert proc.returncode is not None
            return proc.returncode, out, err

    code, out, err = asyncio.run(scenario())
    assert code == 0, err.decode()
    assert b"recorded 1 events (0 rejected)" in out
    (hour_file,) = tmp_path.glob("*-*-*/*.jsonl")  # the real clock's hour
    assert [e["seq"] for e in lines_of(hour_file)] == [1]
