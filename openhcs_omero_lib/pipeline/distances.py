"""Euclidean distances and nearest pixels, computed only where the operations need them.

scipy's exact transform (``ndi.distance_transform_edt``, Maurer's algorithm) visits
every pixel of the image in two passes of general-purpose C and, for distances,
builds float64 planes of offsets; on a field of nuclei most of that work is far from
any object. Both uses here need little of it: the distance inside objects a dozen
pixels across, and the nearest object within a few pixels of each. They run the same
two separable passes, the first (nearest feature in each column) over the whole image
with cumulative maxima, the second (nearest over the columns of a row) only for the
pixels asked about and only as far as the answer can lie.

The results are scipy's to the bit: squared distances are whole numbers, so their
minimum is exact and its float64 square root is the one scipy takes; where several
features are equally near, scipy's transform takes the one in the leftmost column,
and in that column the upper one (its 1-D Voronoi passes break ties to the earlier
site), and so does :func:`nearest_labels`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

MAX_REACH = 64
"""Beyond this many columns, :func:`distance_inside` gives the work to scipy (objects
that wide are not what the row pass is for)."""


def _nearest_in_columns(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every pixel, the row of the nearest feature at or above it and at or below it
    in its column; a column without one gets rows so far away that no distance
    through them can win."""
    h, w = features.shape
    dtype = np.int32 if 2 * h + w + 2 < 2 ** 31 else np.int64
    far = dtype(h + w + 1)  # farther than any two pixels of the image are apart
    rows = np.arange(h, dtype=dtype)[:, None]
    above = np.where(features, rows, -far)
    below = np.where(features, rows, h + far)
    # Row by row rather than np.maximum.accumulate(axis=0), which strides down the
    # columns of a C-ordered image and takes ten times as long.
    for y in range(1, h):
        np.maximum(above[y - 1], above[y], out=above[y])
        np.minimum(below[h - y], below[h - y - 1], out=below[h - y - 1])
    return above, below


def distance_inside(mask: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """``ndi.distance_transform_edt(mask)[ys, xs]`` for pixels ``(ys, xs)`` of the mask."""
    mask = np.asarray(mask, dtype=bool)
    if mask.all() or not len(ys):
        return ndi.distance_transform_edt(mask)[ys, xs]
    h, w = mask.shape
    above, below = _nearest_in_columns(~mask)
    rows = np.arange(h, dtype=above.dtype)[:, None]
    column = np.minimum(rows - above, below - rows)
    # Squared, capped where no shift within reach can make it the nearest, and with
    # MAX_REACH columns of the cap either side so that every shift can be read
    # without bounds checks.
    cap = MAX_REACH + 1
    padded = np.full((h, w + 2 * MAX_REACH), cap * cap, dtype=np.int32)
    np.minimum(column, cap, out=column)
    np.multiply(column, column, out=padded[:, MAX_REACH:MAX_REACH + w])
    squared = padded.ravel()
    at = ys * (w + 2 * MAX_REACH) + xs + MAX_REACH
    best = squared[at]
    # Only pixels farther than dx can come closer through a column dx away.
    dx = 1
    active = np.flatnonzero(best > 1)
    while active.size:
        here, b = at[active], best[active]
        np.minimum(b, squared[here - dx] + dx * dx, out=b)
        np.minimum(b, squared[here + dx] + dx * dx, out=b)
        best[active] = b
        dx += 1
        active = active[b > dx * dx]
    if best.max() >= cap * cap:  # a pixel MAX_REACH or more from the background
        return ndi.distance_transform_edt(mask)[ys, xs]
    return np.sqrt(best.astype(np.float64))


def nearest_labels(labels: np.ndarray, max_squared: int) -> tuple[np.ndarray, np.ndarray]:
    """Background pixels whose nearest labelled pixel is at a squared distance of at
    most ``max_squared``, and that pixel's label: ``(flat indices, labels)``, as
    ``ndi.distance_transform_edt(labels == 0, return_indices=True)`` would pick them."""
    labels = np.asarray(labels)
    h, w = labels.shape
    labelled = labels != 0
    reach = math.isqrt(max_squared) if max_squared > 0 else 0
    if reach < 1 or not labelled.any():
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=labels.dtype)
    above, below = _nearest_in_columns(labelled)
    rows = np.arange(h, dtype=above.dtype)[:, None]
    up, down = rows - above, below - rows
    column = np.minimum(up, down)
    # A pixel can have a labelled pixel within reach only if some column within reach
    # has one within reach of its row.
    near = ndi.minimum_filter1d(column, 2 * reach + 1, axis=1, mode="nearest") <= reach
    near &= ~labelled
    flat = np.flatnonzero(near)
    cap = reach + 1  # (reach + 1)**2 > max_squared: a capped distance never wins
    padded = np.full((h, w + 2 * reach), cap * cap, dtype=np.int64 if cap > 40000 else np.int32)
    np.minimum(column, cap, out=column)
    np.multiply(column, column, out=padded[:, reach:reach + w], casting="unsafe")
    squared = padded.ravel()
    at = flat + (flat // w) * (2 * reach) + reach
    best = np.full(len(flat), cap * cap, dtype=padded.dtype)
    shift = np.zeros(len(flat), dtype=np.int32)
    # Columns from left to right, a site replacing the best only when strictly
    # closer: ties keep the leftmost column (and, in a column, the upper row).
    for dx in range(-reach, reach + 1):
        d2 = squared[at + dx]
        d2 += dx * dx
        closer = d2 < best
        np.minimum(best, d2, out=best)
        shift[closer] = dx
    inside = best <= max_squared
    where = flat[inside]
    y, x = np.divmod(where, w)
    x += shift[inside]
    row = np.where(up[y, x] <= down[y, x], above[y, x], below[y, x])
    return where, labels[row, x]
