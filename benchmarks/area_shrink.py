"""An exact area-mean shrink, measured against cv2.INTER_AREA (benchmarks/live_turn.py).

A candidate for the live turn's image step, not used by the library: it computes the
mean cv2.INTER_AREA computes, exactly (OpenCV sums in float32 when a factor is not
whole, so where the exact mean ends in .5 it rounds either way), and about 2x faster on
640x480 -> 48x48. Those ties move the quickstart model's scores by up to 1.4e-3 on its
test split, over the 1e-4 parity bar, so prepare_image keeps cv2 until a decision to
retrain on it.
"""

from __future__ import annotations

import numpy as np


def area_shrink(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 [H, W] or [H, W, C] -> [height, width(, C)]: each output pixel the exact mean
    of the input area it covers (fractional pixels at its edges weighted by the fraction
    covered), rounded half up; height <= H and width <= W.

    This is what cv2.INTER_AREA computes, in exact arithmetic: OpenCV sums in float32
    when a factor is not whole, so where the exact mean ends in .5 it rounds either way
    (0.07 % of the values of a 640x480 -> 48x48 shrink differ from it by one level;
    the self-check in benchmarks/live_turn.py). It is also faster on camera frames (about 3x for
    640x480 -> 48x48, benchmarks/live_turn.py): the rows are summed by adding whole rows
    (contiguous uint8 -> uint16 adds, no float copy of the frame), then the columns of
    that small result by one matrix product with integer weights (exact in float64).
    """
    rows, row_scale = _row_sums(image, height)
    w = image.shape[1]
    weights, col_scale = _area_weights(w, width)
    # [height, W, C] -> [height, C, W] @ [W, width]: float64 holds every sum exactly
    # (they stay below 2**53 for any image under MAX_IMAGE_PIXELS).
    moved = np.ascontiguousarray(np.moveaxis(rows, 1, -1), dtype=np.float64)
    del rows
    cols = moved.reshape(-1, w) @ weights
    cols = np.moveaxis(cols.reshape(*moved.shape[:-1], width), -1, 1)
    den = row_scale * col_scale
    num = np.rint(cols).astype(np.int64)
    return ((2 * num + den) // (2 * den)).astype(np.uint8)


def _area_weights(n: int, size: int) -> tuple[np.ndarray, int]:
    """[n, size] integer weights: bin d covers [d * n / size, (d + 1) * n / size), so in
    units of 1 / size of a pixel each pixel weighs how much of it the bin covers; the
    mean of bin d is (x @ weights)[d] / n."""
    edges = np.arange(size + 1, dtype=np.int64) * n
    pixels = np.arange(n, dtype=np.int64)[:, None] * size
    covered = np.minimum(pixels + size, edges[None, 1:]) - np.maximum(pixels, edges[None, :-1])
    return np.maximum(covered, 0).astype(np.float64), n


def _row_sums(a: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """Area sums of the rows of `a` into `size` bins: (numerators, scale), the mean of
    bin d being numerators[d] / scale, exactly."""
    n = a.shape[0]
    if n % size == 0:
        factor = n // size
        out = a[0::factor].astype(np.uint16 if factor <= 257 else np.int64)
        for k in range(1, factor):
            out += a[k::factor]
        return out, factor
    # Bin d: whole rows first..stop - 1, and fractions (in 1 / size of a row) of the
    # rows on either side.
    edges = np.arange(size + 1, dtype=np.int64) * n
    first, stop = -(-edges[:-1] // size), edges[1:] // size
    counts = stop - first
    full = np.zeros((size, *a.shape[1:]), np.uint16 if counts.max() <= 257 else np.int64)
    for k in range(int(counts.max())):
        bins = np.flatnonzero(counts > k)
        if len(bins) == size:
            full += a[first + k]
        else:
            full[bins] += a[first[bins] + k]
    shape = (size,) + (1,) * (a.ndim - 1)
    left = (first * size - edges[:-1]).reshape(shape)
    right = (edges[1:] - stop * size).reshape(shape)
    out = full.astype(np.int64)
    del full
    out *= size
    for weight, index in ((left, np.maximum(first - 1, 0)), (right, np.minimum(stop, n - 1))):
        edge = a[index].astype(np.int64)
        edge *= weight
        out += edge
    return out, n
