"""Image operations a pipeline may use: plain functions on numpy arrays.

This module is the whitelist. Pipeline specs name these operations; nothing else
can run. Each function takes and returns arrays (2-D unless said otherwise) and has
no hidden state, in the manner of scikit-image.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from skimage import filters

from openhcs_omero_lib.pipeline.distances import distance_inside, nearest_labels

# scikit-image's morphology and segmentation, scipy.fft and scipy.spatial (for the
# peaks) are imported by the operations that use them: together they take longer to
# import than a small plate takes to compute, and many pipelines need none of them.
# A run imports what its steps need before its first unit (:func:`import_for`), so
# that no unit's time includes an import. scikit-image loads a package's functions
# from their modules on first use (lazy_loader): the functions are named here, not
# only their package, or the first unit would still load watershed's (8 ms).
IMPORTS = {
    "median": ("skimage.morphology:disk",),
    "open": ("skimage.morphology:disk",),
    "subtract_background": ("scipy.fft",),
    "subtract_background:tophat": ("skimage.morphology:disk", "skimage.morphology:white_tophat"),
    "watershed_split": ("skimage.segmentation:watershed", "openhcs_omero_lib.pipeline.peaks"),
    "filter_objects": ("skimage.segmentation:clear_border",),
    "expand_labels": ("skimage.segmentation:expand_labels",),
}
"""Modules (``module``) and functions (``module:name``) each operation (``op`` or
``op:method``) imports when it first runs."""


def import_for(op: str, method: str | None = None) -> None:
    """Import now what operation ``op`` (with ``method``) imports when it first runs."""
    import importlib

    for name in IMPORTS.get(op, ()) + IMPORTS.get(f"{op}:{method}", ()):
        module, _, attribute = name.partition(":")
        imported = importlib.import_module(module)
        if attribute:
            getattr(imported, attribute)


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
    if stack.shape[0] == 1:  # one plane: every projection is that plane
        return stack[0].astype(np.float32)
    if method == "max":
        # The maximum is exact in the stack's own type: one plane is converted
        # instead of the whole stack, with the same values.
        return np.max(stack, axis=0).astype(np.float32)
    reducer = {"mean": np.mean, "sum": np.sum}[method]
    return reducer(stack.astype(np.float32), axis=0)


def _float32(image: np.ndarray) -> np.ndarray:
    """``image`` as float32, without a copy when it already is (no op writes into its input)."""
    return np.asarray(image, dtype=np.float32)


def gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    return ndi.gaussian_filter(_float32(image), sigma)


def median(image: np.ndarray, radius: int) -> np.ndarray:
    from skimage.morphology import disk

    return ndi.median_filter(_float32(image), footprint=disk(radius))


FFT_BLUR_MIN_RADIUS = 16
"""Kernel radius from which :func:`_blur_fft` is used: below it the direct sums cost
less than two FFTs of the padded image."""


def _blur_fft(image: np.ndarray, sigma: float) -> np.ndarray:
    """``ndi.gaussian_filter(image, sigma)`` (float32, mode ``reflect``) through FFTs.

    Why: the direct filter costs ``2 * (8 sigma + 1)`` multiply-adds per pixel (482 at
    the presets' radius of 30); a product of spectra costs the same whatever the
    radius. It is the same linear operator as scipy's: the same sampled kernel
    (radius ``int(4 sigma + 0.5)``, normalised), the image extended by symmetric
    reflection by the kernel's radius (numpy's ``symmetric`` is scipy's ``reflect``,
    repeated when the kernel is longer than the image) so that the circular
    convolution never wraps into the part that is kept. Only rounding differs: the
    FFT runs in float32 and lands within a few float32 steps of scipy's result (which
    rounds to float32 after each axis), 1e-4 on a background of hundreds; the image's
    (rounded) mean is taken out first because the error grows with the magnitude
    transformed. tests/test_ops_outputs.py checks the tolerance and that the
    pipelines' results are unchanged.
    """
    from scipy import fft as sfft

    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 / (sigma * sigma) * x ** 2)
    kernel /= kernel.sum()
    # Whole numbers: subtracting it from integer-valued pixels is exact.
    centre = np.float32(np.round(np.mean(image, dtype=np.float64)))
    padded = np.pad(image - centre, radius, mode="symmetric")
    shape = tuple(sfft.next_fast_len(n, real=True) for n in padded.shape)

    def transfer(n: int, real: bool) -> np.ndarray:
        # The kernel centred on index 0 of a circle of n samples: even, so its
        # spectrum is real.
        circle = np.zeros(n)
        circle[:radius + 1] = kernel[radius:]
        circle[n - radius:] = kernel[:radius]
        return (sfft.rfft(circle) if real else sfft.fft(circle)).real

    spectrum = sfft.rfft2(padded, s=shape)
    spectrum *= (transfer(shape[0], False)[:, None] * transfer(shape[1], True)[None, :]).astype(np.float32)
    blurred = sfft.irfft2(spectrum, s=shape)[radius:radius + image.shape[0], radius:radius + image.shape[1]]
    blurred += centre
    return blurred


def subtract_background(image: np.ndarray, radius: float, method: str = "gaussian") -> np.ndarray:
    """Remove slowly varying background (uneven illumination), clipped at zero.

    ``gaussian`` subtracts a blur of scale ``radius`` (fast); ``tophat`` is a white
    top-hat with a disk of ``radius`` (exact for objects smaller than the disk).
    """
    image = _float32(image)
    if method == "tophat":
        from skimage.morphology import disk, white_tophat

        return white_tophat(image, disk(int(round(radius))))
    # A low percentile filter would follow the background more closely; a
    # blur of the image is nearly as good for sparse objects and much faster.
    if image.ndim == 2 and int(4.0 * radius + 0.5) >= FFT_BLUR_MIN_RADIUS:
        background = _blur_fft(image, radius)
    else:
        background = ndi.gaussian_filter(image, radius)
    np.subtract(image, background, out=background)
    return np.maximum(background, 0, out=background)


def threshold(image: np.ndarray, method: str = "otsu", value: float | None = None,
              factor: float = 1.0) -> np.ndarray:
    """Foreground mask: ``image > factor * t`` with ``t`` from ``method`` (or ``value``
    for ``manual``). A flat image has no foreground."""
    if method == "manual":
        level = float(value)  # type: ignore[arg-type]
    else:
        low, high = image.min(), image.max()
        if float(low) == float(high):
            return np.zeros(image.shape, dtype=bool)
        if method == "otsu" and image.dtype.kind == "f" and np.isfinite(low) and np.isfinite(high):
            level = float(filters.threshold_otsu(hist=_histogram(image, low, high)))
        else:
            level = float(THRESHOLD_METHODS[method](image))
    return image > factor * level


def _histogram(image: np.ndarray, low, high, bins: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The counts and bin centres that ``skimage.exposure.histogram(image, bins)`` gives
    a float image: ``np.histogram``'s, step for step, on the whole image at once.

    Why: ``threshold_otsu(image)`` copies the image, compares every pixel with the
    first, and ``np.histogram`` then finds the range again and filters every block
    to it; here the range is known (the pixels are all inside it) and each pixel's
    bin is computed once, with numpy's own arithmetic in the image's type (its
    estimate, then its corrections by one bin at the edges), so the counts are
    numpy's to the pixel. Blocks of 65536 values, as numpy's, keep the temporaries
    in the cache. Otsu's level is then scikit-image's, from these counts.
    """
    values = image.ravel()
    kind = np.result_type(low, high, values)
    edges = np.linspace(low, high, bins + 1, endpoint=True, dtype=kind)
    if np.any(edges[:-1] >= edges[1:]):  # a range too narrow for the bins: numpy's own error
        from skimage.exposure import histogram

        return histogram(values, bins, source_range="image")
    width = np.subtract(high, low, dtype=kind)
    counts = np.zeros(bins, dtype=np.intp)
    for start in range(0, len(values), 65536):
        block = values[start:start + 65536]
        index = ((np.subtract(block, low, dtype=kind) / width) * bins).astype(np.intp)
        index[index == bins] -= 1
        index[block < edges[index]] -= 1
        index[(block >= edges[index + 1]) & (index != bins - 1)] += 1
        counts += np.bincount(index, minlength=bins)
    return counts, (edges[:-1] + edges[1:]) / 2.0


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every background region that does not reach the image's edge
    filled.

    Why: ``ndi.binary_fill_holes`` grows the outside background inwards one
    dilation at a time, a pass over the image per pixel of depth. Labelling the
    background once (4-connected, the connectivity that dilation uses) and keeping
    the regions that touch an edge gives the same mask in one pass.
    """
    mask = np.asarray(mask, dtype=bool)
    background, _ = ndi.label(~mask)
    outside = np.zeros(int(background.max()) + 1, dtype=bool)
    for axis in range(background.ndim):
        for end in (0, -1):
            outside[np.take(background, end, axis=axis)] = True
    outside[0] = False  # the mask itself
    return ~np.take(outside, background)  # take: a lookup table, twice as fast as indexing


def open_mask(mask: np.ndarray, radius: int) -> np.ndarray:
    from skimage.morphology import disk

    return ndi.binary_opening(mask, structure=disk(radius))


def remove_small_objects(mask: np.ndarray, min_size: int) -> np.ndarray:
    labels, _ = ndi.label(mask)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return np.take(keep, labels)  # a lookup table: take is twice as fast as keep[labels]


def label(mask: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """Connected components numbered in raster order of their first pixel, as
    ``skimage.measure.label`` numbers them; ``ndi.label`` gives the same labels
    directly as int32, faster and without importing ``skimage.measure``."""
    structure = ndi.generate_binary_structure(np.ndim(mask), connectivity)
    return ndi.label(mask, structure=structure)[0]


def watershed_split(mask: np.ndarray, min_distance: int = 5, smoothing: float = 1.0,
                    intensity: np.ndarray | None = None) -> np.ndarray:
    """Label a mask, splitting touching round objects.

    The landscape is the distance to the background, multiplied by ``intensity``
    when given: nuclei are brightest at their centres, and the product separates
    touching nuclei of unequal size that distance alone merges (CellProfiler's
    shape-and-intensity declumping). Seeds are its maxima at least
    ``min_distance`` apart after smoothing by ``smoothing``; the landscape is
    flooded from them. Every connected component keeps at least one seed.

    The labels are those of scipy's distance transform, scikit-image's
    ``peak_local_max(labels=...)`` and ``watershed`` followed by sequential
    relabelling, to the pixel. Why not those calls: the distance transform is
    needed only inside objects (:func:`.distances.distance_inside`), the peaks
    without a Python loop over objects (:mod:`.peaks`), and no relabelling is
    needed because the seeds are numbered 1..N and every seed keeps its pixel. The
    landscape stays float64 as before: float32 would merge heights that differ in
    the last bits and move seeds.
    """
    mask = np.asarray(mask, dtype=bool)
    components, n = ndi.label(mask)
    if n == 0:
        return components.astype(np.int32)
    pixels = np.flatnonzero(mask)
    ys, xs = np.divmod(pixels, mask.shape[1])
    landscape = np.zeros(mask.shape)
    landscape.ravel()[pixels] = distance_inside(mask, ys, xs)
    if intensity is not None:
        landscape *= np.clip(intensity, 0, None)
    if smoothing > 0:
        landscape = ndi.gaussian_filter(landscape, smoothing)
    from openhcs_omero_lib.pipeline.peaks import labelled_peaks

    peaks = labelled_peaks(landscape, components, min_distance)
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers.ravel()[peaks] = np.arange(1, len(peaks) + 1)
    # A component without a peak (too small or flat) still gets its own seed: its
    # first pixel in raster order, numbered after the peaks in component order.
    seeded = np.zeros(n + 1, dtype=bool)
    seeded[components.ravel()[peaks]] = True
    unseeded = np.flatnonzero(~seeded[1:]) + 1
    if unseeded.size:
        first = np.zeros(n + 1, dtype=np.intp)
        which, at = np.unique(components.ravel()[pixels], return_index=True)
        first[which] = pixels[at]
        markers.ravel()[first[unseeded]] = np.arange(len(peaks) + 1, len(peaks) + 1 + len(unseeded))
    from skimage.segmentation import watershed

    return watershed(-landscape, markers, mask=mask).astype(np.int32, copy=False)


def relabel(labels: np.ndarray) -> np.ndarray:
    """Non-negative labels renumbered 1..N in the order of their values, 0 staying
    background: ``skimage.segmentation.relabel_sequential``'s numbering, by one
    lookup table (it loads a module of its own on first use)."""
    areas = np.bincount(labels.ravel(), minlength=1)
    return _keep_renumbered(labels, areas > 0)


def _keep_renumbered(labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The labels where ``keep[label]`` (background never), renumbered 1..N in the
    order of their values, the others 0: one lookup table, one pass over the image."""
    table = np.zeros(keep.size, dtype=np.int32)
    kept = np.flatnonzero(keep[1:]) + 1
    table[kept] = np.arange(1, kept.size + 1, dtype=np.int32)
    return table[labels]


def filter_objects(labels: np.ndarray, min_area: int = 0, max_area: int | None = None,
                   exclude_border: bool = False) -> np.ndarray:
    """Drop objects outside the area range, and those touching the border if asked;
    the rest renumbered 1..N in the order of their labels (as :func:`relabel`)."""
    areas = np.bincount(labels.ravel(), minlength=1)
    keep = areas >= max(min_area, 1)  # a label with no pixel is no object
    if max_area is not None:
        keep &= areas <= max_area
    keep[0] = False
    if exclude_border:
        from skimage.segmentation import clear_border

        return relabel(clear_border(np.where(np.take(keep, labels), labels, 0)))
    # The kept objects are known from their areas: one lookup table drops the others
    # and renumbers the rest, one pass over the image instead of four.
    return _keep_renumbered(labels, keep)


def expand(labels: np.ndarray, distance: float) -> np.ndarray:
    from skimage.segmentation import expand_labels

    return expand_labels(labels, distance).astype(np.int32)


def ring(labels: np.ndarray, distance: float) -> np.ndarray:
    """A band of ``distance`` pixels around each object, labelled as the object.

    The band of ``expand_labels(labels, distance)`` outside the objects, to the pixel
    (ties between objects included). Why not that call: it runs scipy's distance
    transform over the whole image and gathers labels for every pixel;
    :func:`.distances.nearest_labels` looks only within ``distance`` of the
    objects.
    """
    labels = np.asarray(labels)
    out = np.zeros(labels.shape, dtype=np.int32)
    where, nearest = nearest_labels(labels, _largest_square_within(distance))
    out.ravel()[where] = nearest
    return out


def _largest_square_within(distance: float) -> int:
    """The largest whole ``k`` with ``sqrt(k) <= distance`` in float64, as
    ``expand_labels`` compares ``sqrt(dy**2 + dx**2) <= distance``."""
    if distance < 0:
        return -1
    k = int(distance * distance) + 2
    while k >= 0 and math.sqrt(k) > distance:
        k -= 1
    return k


def object_measurements(labels: np.ndarray, intensities: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-object area and mean intensity in each named image, as columns.

    Why: per-label sums with ``bincount`` over the labelled pixels only, counted
    once for every image, where ``ndi.sum_labels``/``ndi.mean`` count the labels
    again for each image and sum over every pixel. The sums add each object's pixels
    in the same (raster) order, so the values are the same to the last bit.
    """
    flat = np.asarray(labels).ravel()
    if not intensities:  # areas alone: one pass over the labels
        counts = np.bincount(flat, minlength=1)
        counts[0] = 0
        return {"label": np.arange(1, len(counts)), "area": counts[1:].astype(np.float64)}
    inside = np.flatnonzero(flat)
    which = flat[inside]
    counts = np.bincount(which, minlength=1)
    n = len(counts) - 1
    columns: dict[str, np.ndarray] = {"label": np.arange(1, n + 1), "area": counts[1:].astype(np.float64)}
    for name, image in intensities.items():
        if n:
            sums = np.bincount(which, weights=np.asarray(image).ravel()[inside], minlength=n + 1)
            with np.errstate(invalid="ignore", divide="ignore"):  # an empty label's mean is NaN, as before
                columns[f"{name}_intensity"] = sums[1:] / counts[1:]
        else:
            columns[f"{name}_intensity"] = np.zeros(0)
    return columns
