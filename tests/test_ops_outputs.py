"""The operations' outputs, pinned against the formulation they had before they were
made fast.

The ``_ref_*`` functions below are the operations as they were written before issue 18
(plain calls of scipy and scikit-image), copied here unchanged: each library
operation must give exactly what its reference gives (same values, same dtype) on
fixed generated fields, op by op and for whole units of both presets. No result is
hard-coded; the reference computes it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import filters, measure, segmentation
from skimage.feature import peak_local_max

from openhcs_omero_lib.pipeline import ops
from openhcs_omero_lib.pipeline.loading import parse_spec, preset_text
from openhcs_omero_lib.pipeline.run import run_unit
from openhcs_omero_lib.pipeline.spec import bind_to_plate
from openhcs_omero_lib.plates import synthetic

# ---- the reference: the operations as they were -----------------------------------

def _ref_project_z(stack, method="max"):
    if stack.ndim == 2:
        return stack.astype(np.float32)
    reducer = {"max": np.max, "mean": np.mean, "sum": np.sum}[method]
    return reducer(stack.astype(np.float32), axis=0)


def _ref_gaussian(image, sigma):
    return ndi.gaussian_filter(image.astype(np.float32), sigma)


def _ref_subtract_background(image, radius):
    image = image.astype(np.float32)
    background = ndi.gaussian_filter(image, radius)
    return np.clip(image - background, 0, None)


def _ref_threshold(image, method="otsu"):
    if float(image.min()) == float(image.max()):
        return np.zeros(image.shape, dtype=bool)
    level = float({"otsu": filters.threshold_otsu}[method](image))
    return image > level


def _ref_fill_holes(mask):
    return ndi.binary_fill_holes(mask)


def _ref_remove_small_objects(mask, min_size):
    labels, _ = ndi.label(mask)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]


def _ref_label(mask, connectivity=1):
    return measure.label(mask, connectivity=connectivity).astype(np.int32)


def _ref_relabel(labels):
    out, _, _ = segmentation.relabel_sequential(labels)
    return out.astype(np.int32)


def _ref_watershed_split(mask, min_distance=5, smoothing=1.0, intensity=None):
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
    seeded = np.unique(components[markers > 0])
    for comp in np.setdiff1d(np.arange(1, n + 1), seeded):
        ys, xs = np.nonzero(components == comp)
        markers[ys[0], xs[0]] = markers.max() + 1
    labels = segmentation.watershed(-landscape, markers, mask=mask)
    return _ref_relabel(labels)


def _ref_filter_objects(labels, min_area=0, max_area=None, exclude_border=False):
    areas = np.bincount(labels.ravel())
    keep = areas >= min_area
    if max_area is not None:
        keep &= areas <= max_area
    keep[0] = False
    out = np.where(keep[labels], labels, 0)
    if exclude_border:
        out = segmentation.clear_border(out)
    return _ref_relabel(out)


def _ref_ring(labels, distance):
    grown = segmentation.expand_labels(labels, distance)
    return np.where(labels > 0, 0, grown).astype(np.int32)


def _ref_object_measurements(labels, intensities):
    n = int(labels.max())
    index = np.arange(1, n + 1)
    columns = {"label": index, "area": ndi.sum_labels(np.ones_like(labels), labels, index)}
    for name, image in intensities.items():
        columns[f"{name}_intensity"] = ndi.mean(image, labels, index) if n else np.zeros(0)
    return columns


def _mean(a):
    return float(np.mean(a)) if len(a) else float("nan")


def _ref_measure(row, prefix, labels, images):
    cols = _ref_object_measurements(labels, images)
    row[f"{prefix}_count"] = float(len(cols["label"]))
    row[f"{prefix}_area_mean"] = _mean(cols["area"])
    for name in images:
        row[f"{prefix}_{name}_intensity_mean"] = _mean(cols[f"{name}_intensity"])


def _ref_segment(ch1):
    """The nuclei of both presets, with every intermediate value."""
    v = {"flat": _ref_subtract_background(ch1, 30)}
    v["smooth"] = _ref_gaussian(v["flat"], 1.0)
    v["mask"] = _ref_threshold(v["smooth"], "otsu")
    v["filled"] = _ref_fill_holes(v["mask"])
    v["big"] = _ref_remove_small_objects(v["filled"], 40)
    v["nuclei"] = _ref_watershed_split(v["big"], 4, 0.0, v["smooth"])
    return v


def _ref_nuclei_count(stacks):
    channels = {f"ch{c}": _ref_project_z(s, "max") for c, s in stacks.items()}
    v = _ref_segment(channels["ch1"])
    row = {}
    _ref_measure(row, "nuclei", v["nuclei"], channels)
    return row


def _ref_nuclear_translocation(stacks):
    ch1, ch2 = (_ref_project_z(stacks[c], "max") for c in (1, 2))
    v = _ref_segment(ch1)
    cytoplasm = _ref_ring(v["nuclei"], 5)
    row = {}
    _ref_measure(row, "nuclei", v["nuclei"], {"ch2": ch2})
    _ref_measure(row, "cytoplasm", cytoplasm, {"ch2": ch2})
    den = row["cytoplasm_ch2_intensity_mean"]
    row["nc_ratio_ch2"] = row["nuclei_ch2_intensity_mean"] / den if den else float("nan")
    return row


def _ref_simple_count(stacks):
    """The benchmark's plain-loop pipeline (openhcs_omero_lib/bench/plain_loop.py)."""
    smooth = _ref_gaussian(_ref_project_z(stacks[1], "max"), 1.0)
    nuclei = _ref_label(_ref_remove_small_objects(_ref_threshold(smooth, "otsu"), 40))
    row = {}
    _ref_measure(row, "nuclei", nuclei, {})
    return row


REFERENCE_PRESETS = {"nuclei_count": _ref_nuclei_count, "nuclear_translocation": _ref_nuclear_translocation,
                     "simple_count": _ref_simple_count}


# ---- the fields -------------------------------------------------------------------

def _render(size, seed, well, touching=True, channels=2):
    config = synthetic.SyntheticPlateConfig(wells=96, sites=1, channels=channels, size=size, seed=seed,
                                            touching=touching)
    planes, _ = synthetic.render_site(config, well, 1, 1)
    return {c: planes[(c, 1)][None] for c in range(1, channels + 1)}


def _rolled(stacks, shift):
    """Nuclei cut by the field's edges (the generator keeps them inside)."""
    return {c: np.roll(s, shift, axis=(1, 2)) for c, s in stacks.items()}


def _empty(size):
    """Background and noise only: no nuclei at all."""
    rng = np.random.default_rng(size)
    return {c: (200 + rng.normal(0, 15, size=(1, size, size))).astype(np.uint16) for c in (1, 2)}


FIELDS = {
    "256 touching": lambda: _render(256, 1, "A01"),
    "256 sparse": lambda: _render(256, 2, "B03", touching=False),
    "384 touching": lambda: _render(384, 3, "C05"),
    "512 touching": lambda: _render(512, 4, "D07"),
    "512 dense, cut by the edges": lambda: _rolled(_render(512, 5, "H12"), (200, 300)),
    "160 touching": lambda: _render(160, 6, "E02"),
    "64 (smaller than the background kernel)": lambda: _render(64, 7, "F04"),
    "200x200 no nuclei, noise": lambda: _empty(200),
    "128 blank": lambda: {c: np.full((1, 128, 128), 300, np.uint16) for c in (1, 2)},
}


@pytest.fixture(scope="module", params=list(FIELDS))
def field(request):
    return FIELDS[request.param]()


@pytest.fixture(scope="module")
def reference(field):
    """The reference's intermediate values of channel 1 on the field."""
    ch1 = _ref_project_z(field[1], "max")
    return {"ch1": ch1, "ch2": _ref_project_z(field[2], "max"), **_ref_segment(ch1)}


def _same(new, old):
    """Equal values and dtype (NaN equal to NaN)."""
    new, old = np.asarray(new), np.asarray(old)
    assert new.dtype == old.dtype, (new.dtype, old.dtype)
    assert new.shape == old.shape, (new.shape, old.shape)
    np.testing.assert_array_equal(new, old)


# ---- op by op ---------------------------------------------------------------------

def test_project_z_as_before(field):
    stack = field[1]
    for method in ("max", "mean", "sum"):
        _same(ops.project_z(stack, method), _ref_project_z(stack, method))
    deep = np.concatenate([stack, np.roll(stack, 7, axis=2), stack // 2])
    for method in ("max", "mean", "sum"):
        _same(ops.project_z(deep, method), _ref_project_z(deep, method))


def _close(new, old, image):
    """Equal within a few float32 steps at the image's largest value (the FFT blur's
    rounding, see ops._blur_fft), same dtype and shape."""
    new, old = np.asarray(new), np.asarray(old)
    assert new.dtype == old.dtype and new.shape == old.shape
    np.testing.assert_allclose(new, old, rtol=0, atol=8 * np.spacing(np.float32(image.max())))


def test_subtract_background_as_before(reference):
    """Within rounding (the rows below are exact); both formulations, either side of
    the radius where the FFT takes over."""
    _close(ops.subtract_background(reference["ch1"], 30), reference["flat"], reference["ch1"])
    for radius in (1.5, 3, 4, 12, 50):
        _close(ops.subtract_background(reference["ch1"], radius),
               _ref_subtract_background(reference["ch1"], radius), reference["ch1"])
    wide = np.concatenate([reference["ch1"], reference["ch1"][::-1]], axis=1)  # not square
    _close(ops.subtract_background(wide, 30), _ref_subtract_background(wide, 30), wide)


def test_gaussian_as_before(reference):
    _same(ops.gaussian(reference["flat"], 1.0), reference["smooth"])


def test_threshold_as_before(reference):
    _same(ops.threshold(reference["smooth"], "otsu"), reference["mask"])


def test_fill_holes_as_before(reference):
    _same(ops.fill_holes(reference["mask"]), reference["filled"])
    # masks with real holes, some of them open to the field's edge
    holed = reference["filled"] & ~(np.indices(reference["mask"].shape).sum(axis=0) % 7 == 0)
    _same(ops.fill_holes(holed), _ref_fill_holes(holed))


def test_remove_small_objects_as_before(reference):
    _same(ops.remove_small_objects(reference["filled"], 40), reference["big"])


def test_label_as_before(reference):
    for connectivity in (1, 2):
        _same(ops.label(reference["big"], connectivity), _ref_label(reference["big"], connectivity))


def test_watershed_split_as_before(reference):
    _same(ops.watershed_split(reference["big"], 4, 0.0, reference["smooth"]), reference["nuclei"])


@pytest.mark.parametrize("min_distance,smoothing,weighted", [(5, 1.0, False), (4, 1.0, True), (2, 0.0, False),
                                                             (7, 0.5, True)])
def test_watershed_split_variants_as_before(reference, min_distance, smoothing, weighted):
    weights = reference["smooth"] if weighted else None
    _same(ops.watershed_split(reference["big"], min_distance, smoothing, weights),
          _ref_watershed_split(reference["big"], min_distance, smoothing, weights))


def test_watershed_split_of_unfiltered_masks_as_before(reference):
    """Tiny objects, single pixels and holes: the landscape's flat and isolated cases."""
    mask = reference["mask"].copy()
    mask[::37, ::41] = True
    _same(ops.watershed_split(mask, 4, 0.0, reference["smooth"]),
          _ref_watershed_split(mask, 4, 0.0, reference["smooth"]))
    _same(ops.watershed_split(mask, 3, 0.0, None), _ref_watershed_split(mask, 3, 0.0, None))


def test_filter_objects_as_before(reference):
    # labels numbered with gaps too (3, 6, 9, ...): the labels between have no pixel
    gappy = np.where(reference["nuclei"] > 0, reference["nuclei"] * 3, 0).astype(reference["nuclei"].dtype)
    for labels in (reference["nuclei"], gappy):
        for min_area, max_area, border in ((0, None, False), (120, None, False), (50, 200, True), (0, 150, True)):
            _same(ops.filter_objects(labels, min_area, max_area, border),
                  _ref_filter_objects(labels, min_area, max_area, border))


def test_ring_as_before(reference):
    for distance in (5, 2.5, 1):
        _same(ops.ring(reference["nuclei"], distance), _ref_ring(reference["nuclei"], distance))


def test_object_measurements_as_before(reference):
    images = {"ch1": reference["ch1"], "ch2": reference["ch2"]}
    for labels in (reference["nuclei"], _ref_ring(reference["nuclei"], 5)):
        for measured in (images, {}):
            new, old = ops.object_measurements(labels, measured), _ref_object_measurements(labels, measured)
            assert list(new) == list(old)
            for key in old:
                _same(new[key], old[key])


# ---- whole units ------------------------------------------------------------------

def _rows_equal(new: dict, old: dict) -> None:
    assert list(new) == list(old)
    for key, value in old.items():
        assert isinstance(new[key], float), key
        assert new[key] == value or (math.isnan(new[key]) and math.isnan(value)), (key, new[key], value)


@pytest.mark.parametrize("preset", sorted(REFERENCE_PRESETS))
def test_preset_rows_as_before(field, preset):
    if preset == "simple_count":
        from openhcs_omero_lib.bench.plain_loop import SIMPLE_PIPELINE

        spec = bind_to_plate(parse_spec(SIMPLE_PIPELINE), len(field))
    else:
        spec = bind_to_plate(parse_spec(preset_text(preset), preset), len(field))
    row = run_unit(spec, lambda c: field[c])
    _rows_equal(row, REFERENCE_PRESETS[preset](field))


# ---- random masks: ties, flat objects, single pixels, objects without a seed ---------

def _random_mask(seed, shape=(96, 131), blur=2.0, level=0.55):
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.random(shape), blur)
    return field > np.quantile(field, level)


def _random_weights(seed, mask, kind):
    rng = np.random.default_rng(seed + 1000)
    if kind == "smooth":
        return ndi.gaussian_filter(rng.random(mask.shape) * 1000, 1.5).astype(np.float32)
    if kind == "whole numbers":  # many equal heights
        return rng.integers(0, 4, size=mask.shape).astype(np.float32)
    # zero in some objects: flat landscapes, components without a peak
    components, n = ndi.label(mask)
    dark = np.isin(components, np.arange(1, n + 1, 3))
    return np.where(dark, 0, rng.random(mask.shape) * 100).astype(np.float32)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.filterwarnings("ignore:When min_distance < 1:RuntimeWarning")  # the reference, on purpose
def test_watershed_split_on_random_masks_as_before(seed):
    mask = _random_mask(seed, blur=[1.0, 2.0, 3.5][seed % 3])
    mask[seed::23, ::17] = True  # single pixels and bridges
    for kind in ("smooth", "whole numbers", "dark objects", None):
        weights = None if kind is None else _random_weights(seed, mask, kind)
        for min_distance, smoothing in ((0, 0.0), (1, 0.0), (2, 0.0), (3, 0.7), (4, 0.0), (6, 0.0)):
            _same(ops.watershed_split(mask, min_distance, smoothing, weights),
                  _ref_watershed_split(mask, min_distance, smoothing, weights))


def test_watershed_split_of_whole_and_empty_masks_as_before():
    weights = _random_weights(1, np.ones((40, 50), bool), "smooth")
    for mask in (np.ones((40, 50), bool), np.zeros((40, 50), bool)):
        _same(ops.watershed_split(mask, 4, 0.0, weights), _ref_watershed_split(mask, 4, 0.0, weights))
    big = np.zeros((300, 420), bool)
    big[10:290, 20:400] = True  # wider than the row pass goes: scipy's transform takes over
    _same(ops.watershed_split(big, 4, 0.0, None), _ref_watershed_split(big, 4, 0.0, None))


@pytest.mark.parametrize("seed", range(12))
def test_ring_on_random_labels_as_before(seed):
    """Objects equally near a pixel (single pixels on a lattice) go to the same one."""
    rng = np.random.default_rng(seed)
    labels = ndi.label(_random_mask(seed, level=0.8))[0]
    lattice = np.zeros_like(labels)
    step = 3 + seed % 4
    lattice[seed % step::step, ::step] = rng.integers(1, 9, size=lattice[seed % step::step, ::step].shape)
    for image in (labels, lattice, np.where(labels > 0, labels, lattice)):
        for distance in (0.5, 1, 1.5, 2, 3, 4.2, 5, 9):
            _same(ops.ring(image, distance), _ref_ring(image, distance))
    _same(ops.ring(np.zeros((20, 30), np.int32), 5), _ref_ring(np.zeros((20, 30), np.int32), 5))


def _threshold_cases():
    rng = np.random.default_rng(7)
    yield "uniform", rng.random((64, 80), dtype=np.float32)
    yield "whole numbers on the bin edges", rng.integers(0, 257, size=(64, 64)).astype(np.float32)
    yield "two levels", np.where(rng.random((40, 40)) > 0.7, 5.0, 1.0).astype(np.float32)
    yield "one pixel apart", np.r_[np.zeros(99), [1e-3]].astype(np.float32).reshape(10, 10)
    yield "narrow range far from zero", (1000 + rng.integers(0, 300, size=(50, 50)) * np.float32(6.1e-5)).astype(
        np.float32)
    yield "float64", rng.normal(100, 20, size=(70, 90))
    yield "skewed", (rng.exponential(3, size=(128, 128)) ** 2).astype(np.float32)
    yield "negative values", rng.normal(0, 1, size=(33, 47)).astype(np.float32)


@pytest.mark.parametrize("case", [name for name, _ in _threshold_cases()])
def test_otsu_threshold_as_before_on_awkward_images(case):
    image = dict(_threshold_cases())[case]
    _same(ops.threshold(image, "otsu"), _ref_threshold(image, "otsu"))
    from skimage.exposure import histogram

    counts, centres = ops._histogram(image, image.min(), image.max())
    ref_counts, ref_centres = histogram(image.reshape(-1), 256, source_range="image")
    _same(counts, ref_counts)
    _same(centres, ref_centres)


def test_otsu_threshold_of_a_range_too_narrow_for_its_bins_fails_as_before():
    image = (np.float32(1000) + np.arange(4, dtype=np.float32) * np.spacing(np.float32(1000))).reshape(2, 2)
    for threshold in (ops.threshold, _ref_threshold):
        with pytest.raises(ValueError, match="Too many bins"):
            threshold(image, "otsu")


def test_every_lazily_imported_module_is_listed_for_its_operation():
    """A run imports each step's modules before its first unit (ops.import_for), so
    that no unit's time (which decides whether workers are started) includes an
    import: every function-level import of ops.py must be listed."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(ops))
    lazy: dict[str, list[set[str]]] = {}
    for func in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
        for node in ast.walk(func):
            if isinstance(node, ast.ImportFrom) and func.name != "import_for":
                module = ("openhcs_omero_lib.pipeline." if node.level else "") + (node.module or "")
                for alias in node.names:  # "from scipy import fft" imports scipy.fft
                    lazy.setdefault(func.name, []).append({module, f"{module}.{alias.name}"})
    ops_of = {"median": "median", "_blur_fft": "subtract_background", "subtract_background": "subtract_background",
              "open_mask": "open", "watershed_split": "watershed_split",
              "filter_objects": "filter_objects", "expand": "expand_labels", "_histogram": None}
    assert lazy
    for func, imports in lazy.items():
        op = ops_of[func]
        if op is None:  # numpy's error path only
            continue
        listed = {m.replace(":", ".") for key, names in ops.IMPORTS.items() if key.split(":")[0] == op
                  for m in names}
        for candidates in imports:
            assert candidates & listed, (func, candidates)


FIRST_UNIT_SPEC = """
name: every_lazy_import
load: {channels: [1, 2], z: max}
steps:
  - {op: subtract_background, input: ch1, output: flat, radius: 20, method: tophat}
  - {op: subtract_background, input: ch2, output: flat2, radius: 20}
  - {op: median, input: flat, output: smooth, radius: 1}
  - {op: threshold, input: smooth, output: mask}
  - {op: open, input: mask, output: mask, radius: 1}
  - {op: watershed_split, input: mask, output: nuclei, intensity: smooth}
  - {op: filter_objects, input: nuclei, output: nuclei, min_area: 5, exclude_border: true}
  - {op: expand_labels, input: nuclei, output: cells, distance: 3}
  - {op: measure_objects, labels: cells, intensity: [flat2]}
"""


def test_a_runs_first_unit_imports_nothing(tmp_path):
    """What the steps import is imported when the run compiles its spec, functions
    that scikit-image loads on first use included: the first unit, which decides
    whether workers are worth starting, imports no module (checked in a fresh
    interpreter, where nothing was imported before)."""
    import subprocess
    import sys

    code = f"""
import sys
import numpy as np
from openhcs_omero_lib.pipeline.loading import parse_spec
from openhcs_omero_lib.pipeline.run import compile_unit
spec = parse_spec({FIRST_UNIT_SPEC!r}, "test")
rng = np.random.default_rng(0)
planes = {{c: (rng.random((1, 96, 96)) * 1000).astype(np.uint16) for c in (1, 2)}}
unit = compile_unit(spec)
before = set(sys.modules)
row = unit(planes.__getitem__)
print(sorted(set(sys.modules) - before))
print(len(row))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    imported, columns = out.stdout.strip().splitlines()[-2:]
    assert imported == "[]" and int(columns) > 0


@pytest.mark.parametrize("labels", [
    np.array([[0, 7, 7], [300, 0, 2], [2, 2, 41]], dtype=np.int32),
    np.zeros((4, 5), dtype=np.int32),
    np.random.default_rng(3).choice([0, 5, 9, 1000, 65537], size=(64, 64)).astype(np.int32),
])
def test_relabel_numbers_as_relabel_sequential(labels):
    expected, _, _ = segmentation.relabel_sequential(labels)
    got = ops.relabel(labels)
    assert got.dtype == np.int32 and np.array_equal(got, expected)
