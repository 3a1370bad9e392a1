"""Interpolation over scattered 2-D measurements (a profile's points are not a grid).

Inside the convex hull of the measured points the value is linear over their Delaunay
triangles (scipy ``LinearNDInterpolator``), so a measured point is reproduced exactly;
outside it is the nearest measured value and the point is flagged as extrapolated. A search
asks about the same few shapes tens of thousands of times, so queries are reduced to their
distinct values first (coordinates rounded to 1/256 of a log2 unit, a 0.3 % size step) and
each distinct value is interpolated once and remembered.
"""

from __future__ import annotations

import numpy as np

RESOLUTION = 256.0  # query coordinates are rounded to 1 / RESOLUTION (log2 units)
_SHIFT = np.int64(1 << 24)


class ScatteredTable:
    """value(x, y) from measured (x, y, value) points, with an outside-the-hull flag."""

    def __init__(self, x: np.ndarray, y: np.ndarray, value: np.ndarray) -> None:
        points, inverse = np.unique(np.column_stack([x, y]), axis=0, return_inverse=True)
        # repeated points (the same shape measured twice) average their values
        mean = np.bincount(inverse.ravel(), weights=value) / np.bincount(inverse.ravel())
        # scipy is imported here, not at module level: `sysplan --help` must not pay ~0.8 s
        from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator
        from scipy.spatial import QhullError

        self._nearest = NearestNDInterpolator(points, mean)
        try:
            self._linear = LinearNDInterpolator(points, mean)
        except (QhullError, ValueError):  # fewer than 3 points, or all on one line
            self._linear = None
        self._memo: dict[int, tuple[float, bool]] = {}

    def __call__(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """(values, outside) at the query points, broadcast like ``x`` and ``y``."""
        x, y = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
        # log2 sizes of at least 1 are >= 0, so keys are non-negative and decode with divmod
        qx = np.rint(np.maximum(x.ravel(), 0.0) * RESOLUTION).astype(np.int64)
        qy = np.rint(np.clip(y.ravel(), 0.0, 60000.0) * RESOLUTION).astype(np.int64)
        keys, inverse = np.unique(qx * _SHIFT + qy, return_inverse=True)
        missing = [key for key in keys.tolist() if key not in self._memo]
        if missing:
            self._learn(np.array(missing, dtype=np.int64))
        found = [self._memo[key] for key in keys.tolist()]
        values = np.array([v for v, _ in found])[inverse].reshape(x.shape)
        outside = np.array([o for _, o in found])[inverse].reshape(x.shape)
        return values, outside

    def _learn(self, keys: np.ndarray) -> None:
        """Interpolate the distinct query points ``keys`` once."""
        qx, qy = np.divmod(keys, _SHIFT)
        points = np.column_stack([qx, qy]) / RESOLUTION
        inside = (self._linear(points) if self._linear is not None
                  else np.full(len(points), np.nan))
        outside = np.isnan(inside)
        values = np.where(outside, self._nearest(points), inside)
        self._memo.update(zip(keys.tolist(), zip(values.tolist(), outside.tolist(), strict=True),
                              strict=True))
