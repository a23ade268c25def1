"""Save times as host solvers see them."""

from typing import NamedTuple

import numpy as np


class SaveTimes(NamedTuple):
    """The save times of one solve, as a host solver gets them: strictly increasing
    and after `t0`. `solve` accepts non-decreasing times (several observations at one
    instant) that may start at `t0`, also when they are traced, so this is done here,
    on the host, per solve, once for every host backend.

    `index[i]` is the position in `unique` of the requested time `i`, or `-1` where
    that time is `t0` (its state is `y0`; its cotangent goes to `y0` directly)."""

    unique: np.ndarray
    index: np.ndarray

    @classmethod
    def of(cls, ts: np.ndarray, t0: float) -> "SaveTimes":
        unique, index = np.unique(ts, return_inverse=True)
        start = int(unique.size > 0 and unique[0] <= t0)
        return cls(unique[start:], index.reshape(-1) - start)

    def gather(self, ys: "np.ndarray | None", y0: np.ndarray) -> np.ndarray:
        """`ys` at the unique times -> the state at every requested time."""
        out = np.empty((self.index.size, y0.shape[0]))
        at_t0 = self.index < 0
        out[at_t0] = y0
        if ys is not None:
            out[~at_t0] = ys[self.index[~at_t0]]
        return out

    def scatter(self, ys_bar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The transpose of `gather`: cotangents of repeated times add up. Returns
        `(cotangent at the unique times, cotangent of y0 from save times at t0)`."""
        at_t0 = self.index < 0
        out = np.zeros((self.unique.size, ys_bar.shape[1]))
        np.add.at(out, self.index[~at_t0], ys_bar[~at_t0])
        return out, ys_bar[at_t0].sum(axis=0)
