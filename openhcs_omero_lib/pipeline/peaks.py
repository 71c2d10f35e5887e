"""Seeds for splitting objects: the maxima of a landscape, object by object.

:func:`labelled_peaks` returns what ``skimage.feature.peak_local_max(landscape,
min_distance, labels=labels, exclude_border=False)`` returns, in the same order, but
without its loop over objects. That loop cuts each object's bounding box out, runs a
maximum filter over it and sorts and spaces its peaks in Python, some 0.2 ms per
object, which on a field of a few hundred nuclei costs more than the watershed itself.

Here every step runs over all objects at once, on their pixels only:

- a pixel can be a maximum of its object over the ``(2 d + 1)``-square window only if
  it is one over its 3x3 neighbours, a cheap test that leaves a few pixels per
  object; only those are compared with their whole window. Comparisons are with the
  pixel's own object (as scikit-image's per-object crops do) and windows stop at the
  image's edge (as its ``mode='nearest'`` filter amounts to);
- an object all of whose pixels are maxima (a flat one) gets scikit-image's
  treatment, its isolated pixels, computed on its own box; this is rare;
- peaks are ordered by object, then by decreasing height, then in raster order (its
  stable sort), and a peak closer than ``d`` (Chebyshev) to a kept, higher one of
  the same object is dropped, in that order (its ``ensure_spacing``). Only peaks that
  have such a neighbour are visited in Python.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree


def _highest_in_window(ys, xs, own, height, labels, landscape, radius: int) -> np.ndarray:
    """Whether each pixel is at least as high as every pixel of its own object within
    ``radius`` (Chebyshev), the window cut at the image's edge."""
    h, w = labels.shape
    flat_labels, flat_heights = labels.ravel(), landscape.ravel()
    offsets = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
               if dy or dx]
    if radius == 1:  # many pixels, few offsets: one offset at a time
        highest = np.ones(len(ys), dtype=bool)
        for dy, dx in offsets:
            there = np.clip(ys + dy, 0, h - 1) * w + np.clip(xs + dx, 0, w - 1)
            highest &= ~((flat_labels[there] == own) & (flat_heights[there] > height))
        return highest
    dy, dx = np.array(offsets).T
    there = np.clip(ys[:, None] + dy, 0, h - 1) * w + np.clip(xs[:, None] + dx, 0, w - 1)
    higher = (flat_labels[there] == own[:, None]) & (flat_heights[there] > height[:, None])
    return ~higher.any(axis=1)


def _isolated_peaks(labels, landscape, threshold, label: int, ys, xs) -> np.ndarray:
    """Flat indices of a flat object's peaks: its pixels that a 3x3-cross opening
    removes, above the threshold (scikit-image's rule for an object without a
    maximum), computed on the object's bounding box as it does."""
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    own = labels[box] == label
    isolated = own & ~ndi.binary_opening(own) & (landscape[box] > threshold)
    py, px = np.nonzero(isolated)
    return (py + box[0].start) * labels.shape[1] + px + box[1].start


def labelled_peaks(landscape: np.ndarray, labels: np.ndarray, min_distance: int) -> np.ndarray:
    """Flat indices of the peaks, in ``peak_local_max``'s order (see the module)."""
    h, w = landscape.shape
    threshold = landscape.min()
    pixels = np.flatnonzero(labels)
    own, height = labels.ravel()[pixels], landscape.ravel()[pixels]
    if min_distance < 1:  # a one-pixel window: every pixel above the threshold
        peaks = pixels[height > threshold]
    else:
        ys, xs = np.divmod(pixels, w)
        maxima = np.flatnonzero(_highest_in_window(ys, xs, own, height, labels, landscape, 1))
        if min_distance > 1:
            keep = _highest_in_window(ys[maxima], xs[maxima], own[maxima], height[maxima],
                                      labels, landscape, min_distance)
            maxima = maxima[keep]
        area = np.bincount(own)
        flat = np.flatnonzero(np.bincount(own[maxima], minlength=len(area)) == area)
        flat = flat[flat > 0]
        peaks = pixels[maxima[height[maxima] > threshold]]
        if flat.size:
            peaks = peaks[~np.isin(labels.ravel()[peaks], flat)]
            extra = []
            grouped = np.isin(own, flat)
            order = np.argsort(own[grouped], kind="stable")
            gy, gx, gl = ys[grouped][order], xs[grouped][order], own[grouped][order]
            starts = np.flatnonzero(np.r_[True, gl[1:] != gl[:-1]])
            for start, end in zip(starts, np.r_[starts[1:], len(gl)]):
                extra.append(_isolated_peaks(labels, landscape, threshold, int(gl[start]),
                                             gy[start:end], gx[start:end]))
            peaks = np.concatenate([peaks, *extra])
    peak_labels = labels.ravel()[peaks]
    peaks = peaks[np.lexsort((peaks, -landscape.ravel()[peaks], peak_labels))]
    if min_distance > 1 and len(peaks) > 1:
        peaks = peaks[_spaced(peaks, labels.ravel()[peaks], w, min_distance)]
    return peaks


def _spaced(peaks: np.ndarray, peak_labels: np.ndarray, w: int, min_distance: int) -> np.ndarray:
    """Which peaks (in order of preference) to keep so that no two kept ones of an
    object are closer than ``min_distance``: greedily, the first of each close pair
    wins unless it was itself dropped."""
    ys, xs = np.divmod(peaks, w)
    # Objects side by side, far enough apart that only peaks of one object can pair.
    spread = xs + peak_labels.astype(np.int64) * (w + 2 * min_distance + 1)
    pairs = cKDTree(np.column_stack([ys, spread])).query_pairs(min_distance - 0.5, p=np.inf,
                                                                output_type="ndarray")
    keep = np.ones(len(peaks), dtype=bool)
    if len(pairs):
        pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
        for first, second in pairs.tolist():
            if keep[first]:
                keep[second] = False
    return keep
