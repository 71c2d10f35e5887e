"""Image operations a pipeline may use: plain functions on numpy arrays.

This module is the whitelist. Pipeline specs name these operations; nothing else
can run. Each function takes and returns arrays (2-D unless said otherwise) and has
no hidden state, in the manner of scikit-image.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage import filters, measure, morphology, segmentation
from skimage.feature import peak_local_max

THRESHOLD_METHODS = {
    "otsu": filters.threshold_otsu,
    "li": filters.threshold_li,
    "triangle": filters.threshold_triangle,
    "yen": filters.threshold_yen,
    "mean": filters.threshold_mean,
}


def project_z(stack: np.ndarray, method: str = "max") -> np.ndarray:
    """Reduce a ``(z, y, x)`` stack to one plane: ``max``, ``mean`` or ``sum``."""
    if stack.ndim == 2:
        return stack.astype(np.float32)
    reducer = {"max": np.max, "mean": np.mean, "sum": np.sum}[method]
    return reducer(stack.astype(np.float32), axis=0)


def gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    return ndi.gaussian_filter(image.astype(np.float32), sigma)


def median(image: np.ndarray, radius: int) -> np.ndarray:
    return ndi.median_filter(image.astype(np.float32), footprint=morphology.disk(radius))


def subtract_background(image: np.ndarray, radius: float, method: str = "gaussian") -> np.ndarray:
    """Remove slowly varying background (uneven illumination), clipped at zero.

    ``gaussian`` subtracts a blur of scale ``radius`` (fast); ``tophat`` is a white
    top-hat with a disk of ``radius`` (exact for objects smaller than the disk).
    """
    image = image.astype(np.float32)
    if method == "tophat":
        return morphology.white_tophat(image, morphology.disk(int(round(radius))))
    # A low percentile filter would follow the background more closely; a
    # blur of the image is nearly as good for sparse objects and much faster.
    background = ndi.gaussian_filter(image, radius)
    return np.clip(image - background, 0, None)


def threshold(image: np.ndarray, method: str = "otsu", value: float | None = None,
              factor: float = 1.0) -> np.ndarray:
    """Foreground mask: ``image > factor * t`` with ``t`` from ``method`` (or ``value``
    for ``manual``). A flat image has no foreground."""
    if method == "manual":
        level = float(value)  # type: ignore[arg-type]
    elif float(image.min()) == float(image.max()):
        return np.zeros(image.shape, dtype=bool)
    else:
        level = float(THRESHOLD_METHODS[method](image))
    return image > factor * level


def fill_holes(mask: np.ndarray) -> np.ndarray:
    return ndi.binary_fill_holes(mask)


def open_mask(mask: np.ndarray, radius: int) -> np.ndarray:
    return ndi.binary_opening(mask, structure=morphology.disk(radius))


def remove_small_objects(mask: np.ndarray, min_size: int) -> np.ndarray:
    labels, _ = ndi.label(mask)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]


def label(mask: np.ndarray, connectivity: int = 1) -> np.ndarray:
    return measure.label(mask, connectivity=connectivity).astype(np.int32)


def watershed_split(mask: np.ndarray, min_distance: int = 5, smoothing: float = 1.0,
                    intensity: np.ndarray | None = None) -> np.ndarray:
    """Label a mask, splitting touching round objects.

    The landscape is the distance to the background, multiplied by ``intensity``
    when given: nuclei are brightest at their centres, and the product separates
    touching nuclei of unequal size that distance alone merges (CellProfiler's
    shape-and-intensity declumping). Seeds are its maxima at least
    ``min_distance`` apart after smoothing by ``smoothing``; the landscape is
    flooded from them. Every connected component keeps at least one seed.
    """
    landscape = ndi.distance_transform_edt(mask)
    if intensity is not None:
        landscape = landscape * np.clip(intensity, 0, None)
    if smoothing > 0:
        landscape = ndi.gaussian_filter(landscape, smoothing)
    components, n = ndi.label(mask)
    if n == 0:
        return components.astype(np.int32)
    peaks = peak_local_max(landscape, min_distance=min_distance, labels=components, exclude_border=False)
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # A component without a peak (too small or flat) still gets its own seed.
    seeded = np.unique(components[markers > 0])
    for comp in np.setdiff1d(np.arange(1, n + 1), seeded):
        ys, xs = np.nonzero(components == comp)
        markers[ys[0], xs[0]] = markers.max() + 1
    labels = segmentation.watershed(-landscape, markers, mask=mask)
    return relabel(labels)


def relabel(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 1..N in scan order."""
    out, _, _ = segmentation.relabel_sequential(labels)
    return out.astype(np.int32)


def filter_objects(labels: np.ndarray, min_area: int = 0, max_area: int | None = None,
                   exclude_border: bool = False) -> np.ndarray:
    """Drop objects outside the area range, and those touching the border if asked."""
    areas = np.bincount(labels.ravel())
    keep = areas >= min_area
    if max_area is not None:
        keep &= areas <= max_area
    keep[0] = False
    out = np.where(keep[labels], labels, 0)
    if exclude_border:
        out = segmentation.clear_border(out)
    return relabel(out)


def expand(labels: np.ndarray, distance: float) -> np.ndarray:
    return segmentation.expand_labels(labels, distance).astype(np.int32)


def ring(labels: np.ndarray, distance: float) -> np.ndarray:
    """A band of ``distance`` pixels around each object, labelled as the object."""
    grown = segmentation.expand_labels(labels, distance)
    return np.where(labels > 0, 0, grown).astype(np.int32)


def object_measurements(labels: np.ndarray, intensities: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-object area and mean intensity in each named image, as columns."""
    n = int(labels.max())
    index = np.arange(1, n + 1)
    columns: dict[str, np.ndarray] = {"label": index,
                                      "area": ndi.sum_labels(np.ones_like(labels), labels, index)}
    for name, image in intensities.items():
        columns[f"{name}_intensity"] = (ndi.mean(image, labels, index) if n
                                        else np.zeros(0))
    return columns
