"""Outlines of measured objects: what units send back when ROIs or a QC montage are
asked for. They must trace the objects that were counted, one object per label."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from skimage.draw import disk
from skimage.draw import polygon as fill_polygon

from openhcs_omero_lib import engine
from openhcs_omero_lib.execution.executor import run_units
from openhcs_omero_lib.pipeline import ops
from openhcs_omero_lib.pipeline.loading import parse_spec, preset_text
from openhcs_omero_lib.pipeline.outlines import outlines
from openhcs_omero_lib.pipeline.run import run_unit
from openhcs_omero_lib.plates.imagexpress import ImageXpressSource


def _spec(name: str = "nuclei_count"):
    return parse_spec(preset_text(name), name)


def _rasterise(found, shape) -> np.ndarray:
    """The labels image the polygons describe (holes cut out by even-odd filling)."""
    out = np.zeros(shape, dtype=np.int32)
    for label, polys in found.by_object().items():
        inside = np.zeros(shape, dtype=bool)
        for poly in polys:
            mask = np.zeros(shape, dtype=bool)
            # polygon vertices are pixel-edge coordinates; skimage fills by pixel centres
            rr, cc = fill_polygon(poly[:, 1] - 0.5, poly[:, 0] - 0.5, shape)
            mask[rr, cc] = True
            inside ^= mask
        out[inside] = label
    return out


def _labels_with_touching_discs() -> np.ndarray:
    labels = np.zeros((120, 160), dtype=np.int32)
    for label, (y, x, r) in enumerate([(30, 30, 12), (30, 52, 11), (80, 120, 20), (100, 20, 6), (5, 150, 8)], 1):
        rr, cc = disk((y, x), r, shape=labels.shape)
        labels[rr, cc] = label  # the second disc overlaps the first: they touch
    return labels


def test_each_object_is_traced_within_a_pixel():
    labels = _labels_with_touching_discs()
    found = outlines(labels)
    assert found.count == 5 and found.shape == labels.shape
    assert sorted(found.by_object()) == [1, 2, 3, 4, 5]
    drawn = _rasterise(found, labels.shape)
    for label in range(1, 6):
        a, b = labels == label, drawn == label
        assert (a & b).sum() / (a | b).sum() > 0.85, label
    # within the image, pixel-edge coordinates on the half-pixel grid
    points = np.concatenate([poly for _, poly in found.polygons()])
    assert points[:, 0].min() >= 0 and points[:, 0].max() <= labels.shape[1]
    assert points[:, 1].min() >= 0 and points[:, 1].max() <= labels.shape[0]
    assert np.array_equal(points * 2, np.rint(points * 2))
    # simplified, not a vertex per boundary pixel
    assert len(points) < sum(ops.object_measurements(labels, {})["area"]) / 3


def test_a_ring_has_its_outer_and_inner_edge_and_a_missing_object_none():
    nuclei = np.zeros((80, 80), dtype=np.int32)
    rr, cc = disk((40, 40), 10, shape=nuclei.shape)
    nuclei[rr, cc] = 1
    rings = ops.ring(nuclei, 5)
    found = outlines(rings)
    assert found.count == 1 and len(found.by_object()[1]) == 2
    drawn = _rasterise(found, rings.shape)
    assert ((drawn == 1) & (rings == 1)).sum() / ((drawn == 1) | (rings == 1)).sum() > 0.85
    gap = rings.copy()
    gap[gap == 1] = 2  # label 1 has no pixels: counted by measure_objects, not drawn
    found = outlines(gap)
    assert found.count == 2 and sorted(found.by_object()) == [2]
    empty = outlines(np.zeros((10, 10), dtype=np.int32))
    assert empty.count == 0 and list(empty.polygons()) == []


def test_run_unit_hands_out_the_labels_it_measured(small_plate):
    with ImageXpressSource(small_plate.folder) as source:
        spec = engine.bind(_spec("nuclear_translocation"), source.layout)
        unit = next(source.layout.units())

        def read(channel):
            return source.read_stack(unit, channel)

        labels = {}
        with_labels = run_unit(spec, read, labels)
        plain = run_unit(spec, read)
    assert with_labels == plain
    assert sorted(labels) == ["cytoplasm", "nuclei"]
    assert int(labels["nuclei"].max()) == plain["nuclei_count"]
    assert int(labels["cytoplasm"].max()) == plain["cytoplasm_count"]


@pytest.mark.parametrize("workers", [1, 2])
def test_units_send_outlines_only_when_asked_and_one_object_per_count(small_plate, workers, monkeypatch):
    from openhcs_omero_lib.execution import executor

    monkeypatch.setattr(executor, "PARENT_COMPUTES", False)  # with 2: spawned workers compute every unit
    with ImageXpressSource(small_plate.folder) as source:
        spec = engine.bind(_spec(), source.layout)
        kept = run_units(spec, source, workers=workers, outlines=True)
        plain = run_units(spec, source, workers=1)
    assert all(r.outlines is None for r in plain)
    assert [r.measurements for r in kept] == [r.measurements for r in plain]
    for r in kept:
        found = r.outlines["nuclei"]
        assert found.count == r.measurements["nuclei_count"] == len(found.by_object()), r.unit


def test_plate_results_keep_the_outlines_by_unit(small_plate):
    with ImageXpressSource(small_plate.folder) as source:
        results = engine.run_pipeline(source, _spec(), workers=1, outlines=True)
        plain = engine.run_pipeline(source, _spec(), workers=1)
    assert plain.outlines is None
    pd.testing.assert_frame_equal(results.images, plain.images)
    keys = {(u.well, u.site, u.timepoint) for u in results.outlines}
    assert keys == set(zip(results.images["well"], results.images["site"], results.images["timepoint"]))
