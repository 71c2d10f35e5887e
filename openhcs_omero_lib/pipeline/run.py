"""Running a (bound) pipeline spec on one unit of work."""

from __future__ import annotations

from typing import Callable

import numpy as np

from openhcs_omero_lib.pipeline import ops
from openhcs_omero_lib.pipeline.spec import (
    ExpandLabels,
    FillHoles,
    FilterObjects,
    Gaussian,
    Label,
    MeasureImage,
    MeasureObjects,
    Median,
    OpenMask,
    PipelineSpec,
    ProjectZ,
    Ratio,
    RemoveSmallObjects,
    Ring,
    SubtractBackground,
    Threshold,
    WatershedSplit,
    _Step,
)

Reader = Callable[[int], np.ndarray]
"""channel index -> ``(z, y, x)`` stack of the unit"""


def _per_plane(func: Callable[[np.ndarray], np.ndarray], value: np.ndarray) -> np.ndarray:
    """Apply a 2-D operation to a plane, or to each plane of a z-stack."""
    if value.ndim == 2:
        return func(value)
    return np.stack([func(plane) for plane in value])


def _per_plane_pair(func, value: np.ndarray, other: np.ndarray | None) -> np.ndarray:
    """Like :func:`_per_plane`, for an operation that also takes a matching image."""
    if other is not None and other.shape != value.shape:
        raise ValueError(f"shapes differ: {value.shape} and {other.shape}")
    if value.ndim == 2:
        return func(value, other)
    return np.stack([func(v, None if other is None else o)
                     for v, o in zip(value, other if other is not None else [None] * len(value))])


def _transform(step: _Step) -> Callable[[np.ndarray], np.ndarray]:
    """The array function of a one-input, one-output step."""
    if isinstance(step, Gaussian):
        return lambda a: ops.gaussian(a, step.sigma)
    if isinstance(step, Median):
        return lambda a: ops.median(a, step.radius)
    if isinstance(step, SubtractBackground):
        return lambda a: ops.subtract_background(a, step.radius, step.method)
    if isinstance(step, Threshold):
        return lambda a: ops.threshold(a, step.method, step.value, step.factor)
    if isinstance(step, FillHoles):
        return ops.fill_holes
    if isinstance(step, OpenMask):
        return lambda a: ops.open_mask(a, step.radius)
    if isinstance(step, RemoveSmallObjects):
        return lambda a: ops.remove_small_objects(a, step.min_size)
    if isinstance(step, Label):
        return lambda a: ops.label(a, step.connectivity)

    if isinstance(step, FilterObjects):
        return lambda a: ops.filter_objects(a, step.min_area, step.max_area, step.exclude_border)
    if isinstance(step, ExpandLabels):
        return lambda a: ops.expand(a, step.distance)
    if isinstance(step, Ring):
        return lambda a: ops.ring(a, step.distance)
    raise TypeError(f"no transform for step {step.op}")  # unreachable for validated specs


def _load(mode: str, stack: np.ndarray) -> np.ndarray:
    if mode == "stack":
        return stack.astype(np.float32)
    if mode == "middle":
        return stack[stack.shape[0] // 2].astype(np.float32)
    return ops.project_z(stack, mode)


def _require_2d(step: _Step, name: str, value: np.ndarray) -> np.ndarray:
    if value.ndim != 2:
        raise ValueError(f"{step.op} needs a plane but '{name}' is a stack of {value.shape[0]}")
    return value


Unit = Callable[..., dict[str, float]]
"""A compiled pipeline: ``(reader of a unit, measured_labels=None) -> its measurements``"""


def run_unit(spec: PipelineSpec, read_channel: Reader,
             measured_labels: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """Measurements of one unit. ``spec`` must be bound to the plate
    (:func:`~.spec.bind_to_plate`); ``read_channel`` returns a channel's z-stack.
    Given a dict, ``measured_labels`` receives each ``measure_objects`` step's labels
    by column prefix (for outlines; the measurements do not change)."""
    return compile_unit(spec)(read_channel, measured_labels)


def compile_unit(spec: PipelineSpec) -> Unit:
    """:func:`run_unit` for ``spec``, with the steps looked at once: a run compiles
    its spec once, not once per unit (dispatching on the steps' types, building their
    calls and column names is not the units' work)."""
    for step in spec.steps:
        ops.import_for(step.op, getattr(step, "method", None))
    steps = [_compile(step) for step in spec.steps]
    load = spec.load.z

    def run(read_channel: Reader, measured_labels: dict[str, np.ndarray] | None = None) -> dict[str, float]:
        values: dict[str, np.ndarray] = {}
        row: dict[str, float] = {}

        def get(name: str) -> np.ndarray:
            value = values.get(name)
            if value is None:
                value = values[name] = _load(load, read_channel(int(name[2:])))  # validated: chN
            return value

        for step in steps:
            step(get, values, row, measured_labels)
        return row

    return run


Step = Callable[[Callable[[str], np.ndarray], dict, dict, "dict | None"], None]


def _compile(step: _Step) -> Step:
    """The work of one step on a unit: ``(get, values, row, measured_labels) -> None``."""
    if isinstance(step, ProjectZ):
        inp, out, method = step.input, step.output, step.method

        def project(get, values, row, measured):
            values[out] = ops.project_z(get(inp), method)
        return project
    if isinstance(step, MeasureObjects):
        names = list(step.intensity)
        p = step.column_prefix
        columns = [(f"{p}_{n}_intensity_mean", f"{n}_intensity") for n in names]

        def measure_objects(get, values, row, measured):
            labels = _require_2d(step, step.labels, get(step.labels))
            cols = ops.object_measurements(labels, {n: _require_2d(step, n, get(n)) for n in names})
            if measured is not None:
                measured[p] = labels
            row[f"{p}_count"] = float(len(cols["label"]))
            row[f"{p}_area_mean"] = _mean(cols["area"])
            for column, key in columns:
                row[column] = _mean(cols[key])
        return measure_objects
    if isinstance(step, MeasureImage):
        def measure_image(get, values, row, measured):
            mask = _require_2d(step, step.mask, get(step.mask)) if step.mask else None
            for n in step.images:
                image = _require_2d(step, n, get(n))
                pixels = image[mask] if mask is not None else image
                row[f"{n}_mean"] = _mean(pixels)
                row[f"{n}_integrated"] = float(pixels.sum(dtype=np.float64))
        return measure_image
    if isinstance(step, WatershedSplit):
        def split(m, w):
            return ops.watershed_split(m, step.min_distance, step.smoothing, w)

        def watershed(get, values, row, measured):
            weights = get(step.intensity) if step.intensity else None
            values[step.output] = _per_plane_pair(split, get(step.input), weights)
        return watershed
    if isinstance(step, Ratio):
        def ratio(get, values, row, measured):
            den = row[step.denominator]
            row[step.output] = row[step.numerator] / den if den else float("nan")
        return ratio
    func, inp, out = _transform(step), step.input, step.output  # type: ignore[attr-defined]

    def transform(get, values, row, measured):
        values[out] = _per_plane(func, get(inp))
    return transform


def _mean(a: np.ndarray) -> float:
    return float(np.mean(a)) if len(a) else float("nan")
