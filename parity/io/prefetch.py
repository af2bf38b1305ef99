"""Reading ahead: the next items of a slow source made by a background thread while the
caller works on the current one.

A snapshot of the Supabase side is a COPY (the server's work, then the driver's, both
outside the GIL) followed by checksum verification of each batch (the native kernel, also
outside the GIL). In one thread they take turns; with the reading in a thread of its own
they overlap. While the thread runs, :mod:`parity.io.parallel` does not fork (a child
could inherit a lock the thread holds): work meant for several processes runs in this one.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from parity.io import parallel

T = TypeVar("T")

_ITEM, _END, _ERROR = range(3)
#: How often a blocked producer looks whether the caller has gone.
_POLL_S = 0.05


def prefetched(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """The items of ``items``, in order, made by a background thread at most ``depth``
    items ahead of the caller.

    An exception raised while making an item is raised here, where the caller would have
    met it. When the caller stops early (``break``, an exception, closing this generator)
    the thread stops before its next item and closes ``items`` in its own thread, so the
    source's clean-up (a ``finally`` closing a connection) runs; closing waits for that.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, not {depth}")
    handoff: queue.Queue[tuple[int, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[int, Any]) -> bool:
        while not stop.is_set():
            try:
                handoff.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = iter(items)
        try:
            for item in source:
                if not put((_ITEM, item)):
                    return
            put((_END, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
            put((_ERROR, exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="parity-prefetch", daemon=True)
    with parallel.no_forks():
        thread.start()
        try:
            yield from _handed(handoff)
        finally:
            stop.set()
            thread.join()


def _handed(handoff: queue.Queue[tuple[int, Any]]) -> Iterator[Any]:
    while True:
        kind, value = handoff.get()
        if kind == _ITEM:
            yield value
        elif kind == _END:
            return
        else:
            raise value
