"""Urgent work first on a small CPU.

A person waits for two things: the final transcript of what they said and the first words of the reply. On two
cores, background work that runs meanwhile (an interim transcript, evaluating the next prompt ahead of time) takes
half the CPU and makes that wait up to twice as long. Urgent work runs inside `urgent()`; background work checks
`busy()` before each step and gives way; `on_urgent` listeners can stop a step already in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_urgent = 0
_listeners: list[Callable[[], None]] = []


def on_urgent(listener: Callable[[], None]) -> None:
    """Calls `listener` (on the urgent work's thread, so it must be quick) each time urgent work begins."""
    _listeners.append(listener)


@contextmanager
def urgent() -> Iterator[None]:
    global _urgent
    with _lock:
        _urgent += 1
    for listener in _listeners:
        listener()
    try:
        yield
    finally:
        with _lock:
            _urgent -= 1


def busy() -> bool:
    """Whether urgent work is running now."""
    return _urgent > 0
