"""The outlines of measured objects, compactly: what a unit sends back when the
objects themselves are wanted (ROIs in OMERO, a QC montage), instead of its labels.

A labels image of a 2048x2048 field is 16 MB; the outlines of its objects, as
polygons simplified to within half a pixel, a few tens of kB. They travel from
worker processes to the parent in three arrays per labels image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
from scipy import ndimage as ndi
from skimage import measure

TOLERANCE = 0.5
"""Largest distance (pixels) between an outline and its simplified polygon."""


@dataclass(frozen=True)
class Outlines:
    """Every object of one labels image (labels ``1..count``) as closed polygons.

    Vertices are ``(x, y)`` in pixel-edge coordinates (pixel ``(i, j)`` covers
    ``[j, j+1) x [i, i+1)``, as OMERO's shapes and matplotlib's ``imshow`` extent count
    them), all on the half-pixel grid, so ``halves`` keeps them doubled as 16-bit
    integers (4 bytes a vertex, for fields up to 32767 pixels); polygon ``k`` is
    ``halves[starts[k]:starts[k+1]] / 2`` and outlines object ``owner[k]``. An object
    has one polygon per boundary: its outer edge, each hole's edge, each separate
    piece's. An object without pixels (a ring covered by its neighbours) is counted
    but has none.
    """

    count: int
    shape: tuple[int, int]
    halves: np.ndarray
    starts: np.ndarray
    owner: np.ndarray

    def polygons(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(label, (n, 2) float array of x, y)`` for every polygon, in label order."""
        for k in range(len(self.owner)):
            yield int(self.owner[k]), self.halves[self.starts[k]:self.starts[k + 1]] / np.float32(2)

    def by_object(self) -> dict[int, list[np.ndarray]]:
        """Label -> its polygons, for the objects that have pixels."""
        out: dict[int, list[np.ndarray]] = {}
        for label, poly in self.polygons():
            out.setdefault(label, []).append(poly)
        return out


def outlines(labels: np.ndarray, tolerance: float = TOLERANCE) -> Outlines:
    """The outlines of a 2-D labels image (0 = background)."""
    labels = np.asarray(labels)
    if max(labels.shape, default=0) > 32767:
        raise ValueError(f"outlines of a {labels.shape} image: at most 32767 pixels a side")
    count = int(labels.max()) if labels.size else 0
    polys: list[np.ndarray] = []
    owner: list[int] = []
    for label, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        # One pixel of background around the object closes every contour.
        crop = np.pad(labels[box] == label, 1).astype(np.uint8)
        origin = np.array([box[0].start - 1, box[1].start - 1], dtype=np.float64)
        for contour in measure.find_contours(crop, 0.5):
            contour = _simplify(_corners(contour[:-1]), tolerance)  # closed: last == first
            if len(contour) < 3:
                continue
            # find_contours counts from pixel centres; shapes count from pixel edges.
            yx = contour + origin + 0.5
            polys.append(np.rint(yx[:, ::-1] * 2).astype(np.uint16))
            owner.append(label)
    sizes = np.array([len(p) for p in polys], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
    halves = np.concatenate(polys) if polys else np.zeros((0, 2), np.uint16)
    return Outlines(count, (int(labels.shape[0]), int(labels.shape[1])), halves, starts,
                    np.array(owner, dtype=np.int32))


def _corners(ring: np.ndarray) -> np.ndarray:
    """The points of a ring (closed, last point not repeated) where its direction
    changes: a binary image's contour runs in straight steps, and the points between
    their ends add nothing but work for :func:`_simplify`."""
    step = np.diff(ring, axis=0, append=ring[:1])
    turns = np.any(step != np.roll(step, 1, axis=0), axis=1)
    return ring[turns] if turns.any() else ring[:1]


def _simplify(ring: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker on a ring: the fewest of its points whose polygon stays
    within ``tolerance`` of every point. (``skimage.measure.approximate_polygon``
    gives the same on an open path but costs four times as much per object.)"""
    n = len(ring)
    if n <= 3:
        return ring
    keep = np.zeros(n, dtype=bool)
    far = int(np.argmax(((ring - ring[0]) ** 2).sum(axis=1)))
    keep[0] = keep[far] = True
    closed = np.concatenate([ring, ring[:1]])
    todo = [(0, far), (far, n)]
    while todo:
        i, j = todo.pop()
        if j - i < 2:
            continue
        a, b = closed[i], closed[j]
        between = closed[i + 1:j]
        ab = b - a
        length = float(np.hypot(ab[0], ab[1]))
        if length == 0:
            dist = np.hypot(between[:, 0] - a[0], between[:, 1] - a[1])
        else:
            dist = np.abs(ab[0] * (between[:, 1] - a[1]) - ab[1] * (between[:, 0] - a[0])) / length
        k = int(np.argmax(dist))
        if dist[k] > tolerance:
            keep[i + 1 + k] = True
            todo += [(i, i + 1 + k), (i + 1 + k, j)]
    return ring[keep]


def unit_outlines(labels_by_prefix: dict[str, np.ndarray]) -> dict[str, Outlines]:
    """:func:`outlines` of each measured labels image, by measurement prefix."""
    return {prefix: outlines(labels) for prefix, labels in labels_by_prefix.items()}
