"""Urgent work first on a small CPU.

A person waits for two things: the final transcript of what they said and the first words of the reply. On two
cores, background work that runs meanwhile (an interim transcript, evaluating the next prompt ahead of time) takes
half the CPU and makes that wait up to twice as long. Urgent work runs inside `urgent()`; background work checks
`busy()` before each step and gives way.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_urgent = 0


@contextmanager
def urgent() -> Iterator[None]:
    global _urgent
    with _lock:
        _urgent += 1
    try:
        yield
    finally:
        with _lock:
            _urgent -= 1


def busy() -> bool:
    """Whether urgent work is running now."""
    return _urgent > 0
