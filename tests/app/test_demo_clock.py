"""The demo's simulated clock: every sleeper wakes at its own deadline, and time moves on
only once it sleeps again, however far the player jumps and however slow the write the
sleeper makes on waking (what kept the demo's metrics windows whole on a loaded machine)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

from parity.app.demo_clock import SimClock

T0 = dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)


def test_sleepers_wake_at_their_deadlines_across_a_jump_and_a_slow_write() -> None:
    async def scenario() -> tuple[list[float], list[float]]:
        clock = SimClock(T0)
        samples: list[float] = []
        retries: list[float] = []

        async def sampler() -> None:
            while True:
                await clock.sleep(10)
                samples.append((clock.now() - T0).total_seconds())
                # A database write in a worker thread, slower than the player's steps.
                await asyncio.to_thread(time.sleep, 0.02)

        async def retrier() -> None:
            while True:
                await clock.sleep(4)
                retries.append((clock.now() - T0).total_seconds())

        tasks = [asyncio.create_task(sampler()), asyncio.create_task(retrier())]
        await asyncio.sleep(0)  # both asleep on the clock
        await clock.advance_and_settle(T0 + dt.timedelta(seconds=45))  # a quiet stretch
        await clock.advance_and_settle(T0 + dt.timedelta(seconds=61))
        for task in tasks:
            task.cancel()
        return samples, retries

    samples, retries = asyncio.run(scenario())
    assert samples == [10, 20, 30, 40, 50, 60]
    assert retries == [4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60]
