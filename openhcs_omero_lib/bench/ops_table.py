"""The op-by-op table: every operation of the presets, timed against a plain reference.

Each operation that ``nuclei_count`` and ``nuclear_translocation`` run is timed on
generated two-channel fields (1024 and 2048 px by default, three fields of different
density each) beside a reference formulation written here, in the benchmark, with
plain calls of numpy, scipy and scikit-image: what a careful script would write. Both
run on the same inputs (the library's own intermediate values of the field), one
after the other, every operation once per round; a time is the median over the
rounds, averaged over the fields. Every reference must give the library's output
(the FFT blur to within float32 rounding), and each whole preset is timed too.

The references are deliberately not the library's code: if the library's operation
were slower than the obvious formulation, the table would show it.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

VERSION = 1
"""Bumped when the cached fields change."""

FIELD_WELLS = ("B03", "D07", "G10")
"""Wells of the synthetic plate the fields are rendered from: different densities."""

FIELD_SEED = 18


# ---- the fields ------------------------------------------------------------------

def field(size: int, well: str, cache: Path) -> dict[int, np.ndarray]:
    """Channels 1 and 2 of one generated field, ``{channel: (1, size, size) uint16}``,
    rendered once (2048 px take seconds) and kept in ``cache``."""
    path = cache / f"v{VERSION}-s{FIELD_SEED}-{size}px-{well}.npz"
    if not path.exists():
        from openhcs_omero_lib.plates import synthetic

        config = synthetic.SyntheticPlateConfig(wells=96, sites=1, channels=2, size=size, seed=FIELD_SEED,
                                                touching=True)
        planes, _ = synthetic.render_site(config, well, 1, 1)
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".field-", suffix=".npz", dir=cache)
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, ch1=planes[(1, 1)], ch2=planes[(2, 1)])
        os.replace(tmp, path)
    with np.load(path) as data:
        return {1: data["ch1"][None], 2: data["ch2"][None]}


def intermediates(stacks: dict[int, np.ndarray]) -> dict[str, np.ndarray]:
    """The library's values along both presets, the inputs of each operation."""
    from openhcs_omero_lib.pipeline import ops

    v: dict[str, Any] = {"stack": stacks[1]}
    v["ch1"] = ops.project_z(stacks[1], "max")
    v["ch2"] = ops.project_z(stacks[2], "max")
    v["flat"] = ops.subtract_background(v["ch1"], 30)
    v["smooth"] = ops.gaussian(v["flat"], 1.0)
    v["mask"] = ops.threshold(v["smooth"], "otsu")
    v["filled"] = ops.fill_holes(v["mask"])
    v["big"] = ops.remove_small_objects(v["filled"], 40)
    v["nuclei"] = ops.watershed_split(v["big"], 4, 0.0, v["smooth"])
    v["cytoplasm"] = ops.ring(v["nuclei"], 5)
    return v


# ---- the references: plain formulations ------------------------------------------

def ref_load(stack):
    return stack.max(axis=0).astype(np.float32)


def ref_subtract_background(image, radius):
    from scipy import signal

    r = int(4.0 * radius + 0.5)  # scipy's kernel, as one 2-D product
    x = np.arange(-r, r + 1)
    k = np.exp(-0.5 / radius ** 2 * x ** 2)
    k /= k.sum()
    padded = np.pad(image, r, mode="symmetric")
    background = signal.fftconvolve(padded, np.outer(k, k).astype(np.float32), mode="valid")
    return np.maximum(image - background, 0)


def ref_gaussian(image, sigma):
    from scipy import ndimage as ndi

    return ndi.gaussian_filter(image, sigma)


def ref_threshold(image):
    from skimage.filters import threshold_otsu

    return image > threshold_otsu(image)


def ref_fill_holes(mask):
    from scipy import ndimage as ndi

    background, _ = ndi.label(~mask)
    edge = np.unique(np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]]))
    return mask | ((background > 0) & ~np.isin(background, edge))


def ref_remove_small_objects(mask, min_size):
    from scipy import ndimage as ndi

    labels, _ = ndi.label(mask)
    keep = np.bincount(labels.ravel()) >= min_size
    keep[0] = False
    return keep[labels]


def ref_label(mask):
    from scipy import ndimage as ndi

    return ndi.label(mask)[0]


def ref_watershed_split(mask, min_distance, intensity):
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    landscape = ndi.distance_transform_edt(mask) * np.clip(intensity, 0, None)
    components, n = ndi.label(mask)
    peaks = peak_local_max(landscape, min_distance=min_distance, labels=components, exclude_border=False)
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    unseeded = np.setdiff1d(np.arange(1, n + 1), components[tuple(peaks.T)])
    if unseeded.size:  # a component without a peak: its first pixel
        _, first = np.unique(components.ravel(), return_index=True)
        markers.ravel()[first[unseeded]] = np.arange(len(peaks) + 1, len(peaks) + 1 + len(unseeded))
    return watershed(-landscape, markers, mask=mask)


def ref_ring(labels, distance):
    from skimage.segmentation import expand_labels

    return np.where(labels > 0, 0, expand_labels(labels, distance)).astype(np.int32)


def ref_measure(labels, images):
    flat = labels.ravel()
    counts = np.bincount(flat)
    out = {"label": np.arange(1, len(counts)), "area": counts[1:].astype(np.float64)}
    for name, image in images.items():
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"{name}_intensity"] = np.bincount(flat, weights=image.ravel(), minlength=len(counts))[1:] / counts[1:]
    return out


def _ref_rows(v, translocation: bool) -> dict[str, float]:
    """A unit of a preset, chained from the references (the preset rows' formulas)."""
    ch1, ch2 = ref_load(v["stack"]), ref_load(v["stack2"])
    smooth = ref_gaussian(ref_subtract_background(ch1, 30), 1.0)
    nuclei = ref_watershed_split(ref_remove_small_objects(ref_fill_holes(ref_threshold(smooth)), 40), 4, smooth)
    row: dict[str, float] = {}

    def measure(prefix, labels, images):
        cols = ref_measure(labels, images)
        row[f"{prefix}_count"] = float(len(cols["label"]))
        row[f"{prefix}_area_mean"] = float(np.mean(cols["area"])) if len(cols["label"]) else float("nan")
        for name in images:
            values = cols[f"{name}_intensity"]
            row[f"{prefix}_{name}_intensity_mean"] = float(np.mean(values)) if len(values) else float("nan")

    if not translocation:
        measure("nuclei", nuclei, {"ch1": ch1, "ch2": ch2})
        return row
    measure("nuclei", nuclei, {"ch2": ch2})
    measure("cytoplasm", ref_ring(nuclei, 5), {"ch2": ch2})
    den = row["cytoplasm_ch2_intensity_mean"]
    row["nc_ratio_ch2"] = row["nuclei_ch2_intensity_mean"] / den if den else float("nan")
    return row


# ---- the cases -------------------------------------------------------------------

BOTH = "both"


def _cases() -> list[dict[str, Any]]:
    from openhcs_omero_lib.pipeline import ops
    from openhcs_omero_lib.pipeline.loading import parse_spec, preset_text
    from openhcs_omero_lib.pipeline.run import compile_unit
    from openhcs_omero_lib.pipeline.spec import bind_to_plate

    units = {name: compile_unit(bind_to_plate(parse_spec(preset_text(name), name), 2))
             for name in ("nuclei_count", "nuclear_translocation")}

    def preset(name):
        return lambda v: units[name]({1: v["stack"], 2: v["stack2"]}.__getitem__)

    def case(op, presets, reference, ours, ref, compare="equal"):
        return {"op": op, "presets": presets, "reference": reference, "ours": ours, "ref": ref, "compare": compare}

    return [
        case("load (z max of a uint16 plane)", BOTH, "`stack.max(axis=0).astype(float32)`",
             lambda v: ops.project_z(v["stack"], "max"), lambda v: ref_load(v["stack"])),
        case("subtract_background (gaussian, radius 30)", BOTH,
             "reflect-padded `scipy.signal.fftconvolve` with scipy's kernel, float32",
             lambda v: ops.subtract_background(v["ch1"], 30), lambda v: ref_subtract_background(v["ch1"], 30),
             "close"),
        case("gaussian (sigma 1)", BOTH, "`ndi.gaussian_filter`",
             lambda v: ops.gaussian(v["flat"], 1.0), lambda v: ref_gaussian(v["flat"], 1.0)),
        case("threshold (otsu)", BOTH, "`image > skimage.filters.threshold_otsu(image)`",
             lambda v: ops.threshold(v["smooth"], "otsu"), lambda v: ref_threshold(v["smooth"])),
        case("fill_holes", BOTH, "`ndi.label` of the background, regions off the edge filled (`np.isin`)",
             lambda v: ops.fill_holes(v["mask"]), lambda v: ref_fill_holes(v["mask"])),
        case("remove_small_objects (40 px)", BOTH, "`ndi.label`, `np.bincount` of the labels",
             lambda v: ops.remove_small_objects(v["filled"], 40), lambda v: ref_remove_small_objects(v["filled"], 40)),
        case("watershed_split (min_distance 4, intensity-weighted)", BOTH,
             "`ndi.distance_transform_edt`, `peak_local_max(labels=...)`, `watershed`",
             lambda v: ops.watershed_split(v["big"], 4, 0.0, v["smooth"]),
             lambda v: ref_watershed_split(v["big"], 4, v["smooth"])),
        case("ring (5 px)", "nuclear_translocation", "`skimage.segmentation.expand_labels`, objects masked out",
             lambda v: ops.ring(v["nuclei"], 5), lambda v: ref_ring(v["nuclei"], 5)),
        case("measure_objects (nuclei, 2 channels)", BOTH, "`np.bincount` of the labels, with each image as weights",
             lambda v: ops.object_measurements(v["nuclei"], {"ch1": v["ch1"], "ch2": v["ch2"]}),
             lambda v: ref_measure(v["nuclei"], {"ch1": v["ch1"], "ch2": v["ch2"]})),
        case("measure_objects (cytoplasm, 1 channel)", "nuclear_translocation", "as above",
             lambda v: ops.object_measurements(v["cytoplasm"], {"ch2": v["ch2"]}),
             lambda v: ref_measure(v["cytoplasm"], {"ch2": v["ch2"]})),
        case("label (the plain-loop pipeline's)", "-", "`ndi.label`",
             lambda v: ops.label(v["big"]), lambda v: ref_label(v["big"])),
        case("whole nuclei_count unit", "nuclei_count", "the references above, chained",
             preset("nuclei_count"), lambda v: _ref_rows(v, False), "rows"),
        case("whole nuclear_translocation unit", "nuclear_translocation", "the references above, chained",
             preset("nuclear_translocation"), lambda v: _ref_rows(v, True), "rows"),
    ]


def _same(ours: Any, ref: Any, compare: str, image: np.ndarray) -> bool:
    if compare == "rows":
        return list(ours) == list(ref) and all(
            ours[k] == ref[k] or (np.isnan(ours[k]) and np.isnan(ref[k])) for k in ref)
    if isinstance(ref, dict):
        return list(ours) == list(ref) and all(_same(ours[k], ref[k], compare, image) for k in ref)
    ours, ref = np.asarray(ours), np.asarray(ref)
    if ours.shape != ref.shape:
        return False
    if compare == "close":  # within a few float32 steps of the image's largest value
        return bool(np.allclose(ours, ref, rtol=0, atol=8 * np.spacing(np.float32(image.max()))))
    return bool(np.array_equal(ours, ref, equal_nan=ours.dtype.kind == "f"))


def _timed(func: Callable[[Any], Any], values: Any) -> float:
    start = time.perf_counter()
    func(values)
    return time.perf_counter() - start


def run_ops(sizes: list[int], wells: list[str], repeats: int, cache: Path, log=print) -> dict[str, Any]:
    """Time every case on every field; the rows of the table."""
    cases = _cases()
    rows = []
    for size in sizes:
        per_field: dict[str, dict[str, list[float]]] = {c["op"]: {"ours": [], "ref": []} for c in cases}
        same = {c["op"]: True for c in cases}
        for well in wells:
            started = time.perf_counter()
            stacks = field(size, well, cache)
            v = intermediates(stacks)
            v["stack2"] = stacks[2]
            for c in cases:  # once untimed: first calls import and warm up; outputs compared
                same[c["op"]] &= _same(c["ours"](v), c["ref"](v), c["compare"], v["ch1"])
            times: dict[str, dict[str, list[float]]] = {c["op"]: {"ours": [], "ref": []} for c in cases}
            for repeat in range(repeats):
                for c in cases:
                    pair = [("ours", c["ours"]), ("ref", c["ref"])]
                    for who, func in (pair if repeat % 2 == 0 else pair[::-1]):
                        times[c["op"]][who].append(_timed(func, v))
            for op, t in times.items():
                per_field[op]["ours"].append(statistics.median(t["ours"]))
                per_field[op]["ref"].append(statistics.median(t["ref"]))
            log(f"ops: {size} px field {well} ({time.perf_counter() - started:.1f} s)")
        for c in cases:
            ours = statistics.fmean(per_field[c["op"]]["ours"])
            ref = statistics.fmean(per_field[c["op"]]["ref"])
            rows.append({"op": c["op"], "presets": c["presets"], "size": size, "ours_ms": round(ours * 1000, 2),
                         "reference_ms": round(ref * 1000, 2), "ratio": round(ours / ref, 3) if ref else None,
                         "same_output": same[c["op"]], "reference": c["reference"],
                         "ours_ms_by_field": [round(x * 1000, 2) for x in per_field[c["op"]]["ours"]],
                         "reference_ms_by_field": [round(x * 1000, 2) for x in per_field[c["op"]]["ref"]]})
    return {"sizes": sizes, "fields": wells, "repeats": repeats, "rows": rows}


def markdown(table: dict[str, Any]) -> str:
    sizes = table["sizes"]
    lines = [f"Op by op: library vs a plain reference formulation on {len(table['fields'])} generated "
             f"two-channel field(s) per size, median of {table['repeats']} round(s) per field, averaged over "
             "the fields; ratio = library / reference (below 1: the library is faster).", "",
             "| op | presets | " + " | ".join(f"{s} px library (ms) | {s} px reference (ms) | {s} px ratio"
                                             for s in sizes) + " | same output | reference formulation |",
             "|---|---|" + "---:|---:|---:|" * len(sizes) + "---|---|"]
    by_op: dict[str, dict[int, dict[str, Any]]] = {}
    for row in table["rows"]:
        by_op.setdefault(row["op"], {})[row["size"]] = row
    for op, per_size in by_op.items():
        first = next(iter(per_size.values()))
        cells = []
        for s in sizes:
            r = per_size.get(s)
            cells.append(f"{r['ours_ms']:.1f} | {r['reference_ms']:.1f} | {r['ratio']:.2f}x" if r else "- | - | -")
        same = "yes" if all(r["same_output"] for r in per_size.values()) else "**no**"
        lines.append(f"| {op} | {first['presets']} | " + " | ".join(cells) + f" | {same} | {first['reference']} |")
    return "\n".join(lines) + "\n"
