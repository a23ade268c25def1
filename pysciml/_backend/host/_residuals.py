"""What the forward pass keeps for the backward pass."""

import threading
from typing import Any

import numpy as np


def _nbytes(obj, depth=0) -> int:
    """Rough size of the NumPy arrays held by `obj` (a dense output, say)."""
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if depth > 3:
        return 0
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(x, depth + 1) for x in obj)
    if hasattr(obj, "__dict__"):
        return sum(_nbytes(x, depth + 1) for x in vars(obj).values())
    return 0


class ResidualStore:
    """Host-side residuals of forward solves, keyed by an integer token that travels
    through JAX as the custom_vjp residual. Bounded in bytes: the oldest entries are
    dropped first, and a `vjp` whose entry is gone re-solves the forward problem (so a
    drop costs time, never correctness)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: "dict[int, tuple[Any, int]]" = {}
        self._bytes = 0
        self._next = 1
        self._lock = threading.Lock()

    def put(self, value) -> int:
        if value is None:
            return 0
        size = _nbytes(value)
        if size > self.max_bytes:
            return 0
        with self._lock:
            token = self._next
            # Token 0 means "nothing kept"; stay inside int32.
            self._next = self._next % (2**31 - 2) + 1
            self._entries[token] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                oldest = next(iter(self._entries))
                self._bytes -= self._entries.pop(oldest)[1]
        return token

    def get(self, token: int):
        with self._lock:
            entry = self._entries.get(token)
        return None if entry is None else entry[0]

    def clear(self):
        with self._lock:
            self._entries.clear()
            self._bytes = 0


RESIDUALS = ResidualStore(max_bytes=256 * 2**20)
