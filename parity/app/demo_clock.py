"""The demo's simulated clock: one :class:`SimClock` drives the writer and the recorder.

The player advances it event by event and, between two events, sleeper deadline by sleeper
deadline, each woken task done before time moves on, so hours of traffic take seconds and
every metrics window and retry still happens at its simulated instant. When the plan has
been played the clock switches to real time ("live").
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
import time

#: Real seconds the player waits, at most, for the tasks it woke to go back to sleep. Only a
#: task that stops sleeping on the clock (a replayer whose buffer emptied, a writer that is
#: stopping) runs into it; a task busy with a store call is waited for.
SETTLE_LIMIT_S = 10.0


class SimClock:
    """Simulated UTC time, advanced by the player; real time once :meth:`go_live` is called.

    :meth:`sleep` waits in simulated time: it returns when the player advances past its
    deadline (after ``go_live``: when that instant arrives in real time).
    """

    def __init__(self, start: dt.datetime) -> None:
        self.t = start
        self.live = False
        self._waiters: list[tuple[dt.datetime, int, asyncio.Future[None]]] = []
        self._ids = itertools.count()

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) if self.live else self.t

    async def sleep(self, seconds: float) -> None:
        if self.live:
            await asyncio.sleep(seconds)
            return
        future = asyncio.get_running_loop().create_future()
        deadline = self.t + dt.timedelta(seconds=seconds)
        heapq.heappush(self._waiters, (deadline, next(self._ids), future))
        await future

    def advance(self, to: dt.datetime) -> int:
        """Move to ``to`` (never backwards); how many sleepers were woken."""
        self.t = max(self.t, to)
        woke = 0
        while self._waiters and self._waiters[0][0] <= self.t:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)
                woke += 1
        return woke

    async def advance_and_settle(self, to: dt.datetime, limit_s: float = SETTLE_LIMIT_S) -> None:
        """Move to ``to`` one sleeper's deadline at a time: each sleeper wakes at its own
        deadline, and the clock moves on only once the tasks woken there sleep again (or
        ``limit_s`` of real time passed). A metrics window then closes, a retry or a
        heartbeat happens, exactly at its simulated instant, and the next one is due a full
        interval later, however far apart the events are and however long the machine
        takes for a write.

        Neither jumping over several deadlines at once nor a short real-time bound will do:
        simulated time runs about a thousand times faster than real time, so a sleeper
        woken after a quiet stretch, or left behind for the milliseconds of a store call on
        a loaded machine, resumes many simulated seconds late, and its metrics windows and
        retries thin out until the health triggers have too few samples to judge."""
        while self._waiters and self._waiters[0][0] <= to:
            woke = self.advance(self._waiters[0][0])
            if not woke:
                continue
            expected = len(self._waiters) + woke
            deadline = time.monotonic() + limit_s
            for spin in itertools.count():
                await asyncio.sleep(0 if spin < 20 else 0.0002)
                if len(self._waiters) >= expected or time.monotonic() > deadline:
                    break
        self.advance(to)

    def go_live(self) -> None:
        loop = asyncio.get_running_loop()
        self.t = max(self.t, dt.datetime.now(dt.UTC))
        self.live = True
        for deadline, _, future in self._waiters:
            delay = max(0.0, (deadline - dt.datetime.now(dt.UTC)).total_seconds())
            loop.call_later(delay, _resolve, future)
        self._waiters = []


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
