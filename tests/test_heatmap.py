"""The plate heat map, read back pixel by pixel: every well drawn where it sits on the
plate, in its value's colour, and failed, unmeasured and missing wells in colours the
scale never uses."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from matplotlib import colormaps, colors
from PIL import Image

from openhcs_omero_lib import engine
from openhcs_omero_lib.pictures import heatmap as H
from openhcs_omero_lib.pipeline.loading import parse_spec, preset_text
from openhcs_omero_lib.plates.imagexpress import ImageXpressSource
from openhcs_omero_lib.plates.layout import plate_format, row_letters, well_name

FORMATS = [6, 24, 96, 384, 1536]


def _pixels(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB")).astype(int)


def _at(pixels: np.ndarray, xy) -> np.ndarray:
    x, y = xy
    return pixels[int(y), int(x)]


def _rgb(colour) -> np.ndarray:
    return np.round(np.array(colors.to_rgb(colour)) * 255).astype(int)


def _close(a, b, tol: int = 2) -> bool:
    return int(np.abs(np.asarray(a) - np.asarray(b)).max()) <= tol


def _wells(rows: int, columns: int, seed: int = 0) -> pd.DataFrame:
    """A wells table as results.wells_table makes it: every fourth position left out
    (not imaged), a few wells failed whole or in part, one without a mean."""
    rng = np.random.default_rng(seed)
    recs = []
    for r in range(1, rows + 1):
        for c in range(1, columns + 1):
            k = (r - 1) * columns + c
            if k % 4 == 3:
                continue
            sites, failed = 2, 0
            if k % 7 == 5:
                sites, failed = 0, 2
            elif k % 11 == 2:
                sites, failed = 1, 1
            recs.append({"well": well_name(r, c), "row": row_letters(r), "column": c, "timepoint": 1,
                         "sites": sites, "sites_failed": failed,
                         "nuclei_count": int(rng.integers(0, 90)) if sites else None,
                         "nuclei_area_mean": np.nan if (sites == 0 or k == 1) else float(rng.random() * 50)})
    frame = pd.DataFrame(recs)
    frame["nuclei_count"] = frame["nuclei_count"].astype("Int64")
    return frame


def _check_every_well(hm: H.HeatMap, wells: pd.DataFrame, measurement: str, rows: int, columns: int) -> None:
    pixels = _pixels(hm.png)
    assert pixels.shape == (hm.height, hm.width, 3)
    ok = wells[wells["sites"] > 0]
    values = pd.to_numeric(ok[measurement], errors="coerce").astype(float).dropna()
    norm = colors.Normalize(values.min(), values.max())
    cmap = colormaps["viridis"]
    values_by_well = dict(zip(ok.loc[values.index, "well"], values))
    failed = set(wells.loc[wells["sites"] == 0, "well"])
    partly = set(wells.loc[(wells["sites"] > 0) & (wells["sites_failed"] > 0), "well"])
    no_value = set(ok["well"]) - set(values_by_well)
    present = set(wells["well"])
    cell = hm.cell
    assert set(hm.centres) == {well_name(r, c) for r in range(1, rows + 1) for c in range(1, columns + 1)}
    for name, centre in hm.centres.items():
        x, y = centre
        assert 0 <= x < hm.width and 0 <= y < hm.height, name
        here = _at(pixels, centre)
        beside = _at(pixels, (x + 0.3 * cell, y))  # off the failed cross's diagonals
        if name in failed:
            assert _close(beside, _rgb(H.FAILED)), (name, beside)
            assert _close(here, (255, 255, 255), 40), (name, here)  # the cross
        elif name not in present:
            assert _close(here, _rgb(H.NOT_IMAGED)), (name, here)
        elif name in no_value:
            assert _close(here, _rgb(H.NO_VALUE)), (name, here)
        else:
            expected = np.round(np.array(cmap(norm(values_by_well[name]))[:3]) * 255)
            assert _close(here, expected), (name, here, expected)
        corner = _at(pixels, (x + 0.34 * cell, y - 0.34 * cell))  # inside the red corner, off the grid lines
        if name in partly:
            assert _close(corner, _rgb(H.FAILED)), (name, corner)
        elif name not in failed:
            assert _close(corner, here, 2), (name, corner, here)
    assert set(hm.failed) == failed and set(hm.partly_failed) == partly and set(hm.no_value) == no_value
    assert hm.values == pytest.approx(values_by_well)


@pytest.mark.parametrize("n_wells", FORMATS)
def test_every_well_of_every_plate_format_is_drawn_in_its_place(n_wells):
    rows, columns = plate_format(n_wells)
    wells = _wells(rows, columns)
    hm = H.plate_heatmap(wells, rows, columns, plate="P1", pipeline="nuclei_count")
    assert hm.measurement == "nuclei_count"
    # readable where OMERO.web and a browser show it: about 600 to 1300 px wide, wells >= 20 px
    assert 600 <= hm.width <= 1300 and 400 <= hm.height <= 900, (hm.width, hm.height)
    assert hm.cell >= 20
    _check_every_well(hm, wells, "nuclei_count", rows, columns)
    # a regular grid, rows top to bottom and columns left to right as the plate names them
    xs = [hm.centres[well_name(1, c)][0] for c in range(1, columns + 1)]
    ys = [hm.centres[well_name(r, 1)][1] for r in range(1, rows + 1)]
    assert np.allclose(np.diff(xs), hm.cell, atol=0.01) and np.allclose(np.diff(ys), hm.cell, atol=0.01)


def test_a_mean_measurement_marks_wells_without_a_value():
    wells = _wells(8, 12, seed=3)
    hm = H.plate_heatmap(wells, 8, 12, plate="P1", pipeline="nuclei_count", measurement="nuclei_area_mean")
    assert "A01" in hm.no_value
    _check_every_well(hm, wells, "nuclei_area_mean", 8, 12)


def test_the_marks_are_colours_the_scale_never_uses():
    scale = np.round(colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255)
    for mark in (H.FAILED, H.NO_VALUE, H.NOT_IMAGED):
        assert np.abs(scale - _rgb(mark)).max(axis=1).min() > 40, mark


def test_a_plate_where_every_field_failed_is_drawn_failed():
    wells = _wells(4, 6)
    wells = wells.drop(columns=["nuclei_count", "nuclei_area_mean"]).assign(sites=0, sites_failed=2)
    hm = H.plate_heatmap(wells, 4, 6, plate="P1", pipeline="nuclei_count", measurement="nuclei_count")
    assert set(hm.failed) == set(wells["well"]) and hm.values == {}
    pixels = _pixels(hm.png)
    for name in wells["well"]:
        x, y = hm.centres[name]
        assert _close(_at(pixels, (x + 0.3 * hm.cell, y)), _rgb(H.FAILED))


def test_several_timepoints_draw_the_chosen_one():
    first = _wells(4, 6, seed=1)
    second = _wells(4, 6, seed=2).assign(timepoint=2)
    wells = pd.concat([first, second], ignore_index=True)
    hm = H.plate_heatmap(wells, 4, 6, plate="P", pipeline="p", timepoint=2)
    assert hm.timepoint == 2
    _check_every_well(hm, second, "nuclei_count", 4, 6)
    assert H.plate_heatmap(wells, 4, 6, plate="P", pipeline="p").timepoint == 1


def test_bad_choices_are_refused_with_the_choices():
    wells = _wells(4, 6)
    with pytest.raises(ValueError, match="nuclei_count, nuclei_area_mean"):
        H.plate_heatmap(wells, 4, 6, plate="P", pipeline="p", measurement="nuclei_size")
    with pytest.raises(ValueError, match="outside a 2x3 plate"):
        H.plate_heatmap(wells, 2, 3, plate="P", pipeline="p")
    with pytest.raises(ValueError, match="timepoint 3"):
        H.plate_heatmap(wells, 4, 6, plate="P", pipeline="p", timepoint=3)


def test_a_pipelines_measurements_are_known_before_it_runs(small_plate):
    spec = parse_spec(preset_text("nuclear_translocation"), "nuclear_translocation")
    assert H.check_measurement(spec, None) == "nuclei_count"
    assert H.check_measurement(spec, "nc_ratio_ch2") == "nc_ratio_ch2"
    with pytest.raises(ValueError, match="measures no 'nuclei_size'.*nuclei_count, nuclei_area_mean"):
        H.check_measurement(spec, "nuclei_size")
    # ...and they are the columns a run makes
    nuclei = parse_spec(preset_text("nuclei_count"), "nuclei_count")
    with ImageXpressSource(small_plate.folder) as source:
        bound = engine.bind(nuclei, source.layout)
        results = engine.run_pipeline(source, nuclei, workers=1)
    assert H.pipeline_columns(bound) == H.well_measurements(results.wells)


def test_a_real_runs_heat_map(small_plate):
    with ImageXpressSource(small_plate.folder) as source:
        layout = source.layout
        results = engine.run_pipeline(source, parse_spec(preset_text("nuclei_count"), "nuclei_count"), workers=1)
    hm = H.plate_heatmap(results.wells, layout.rows, layout.columns, plate=layout.name, pipeline="nuclei_count")
    _check_every_well(hm, results.wells, "nuclei_count", layout.rows, layout.columns)
    assert len(hm.values) == small_plate.config.wells


def test_a_plate_of_several_runs_draws_one_run():
    first = _wells(4, 6, seed=1).assign(run_id=11, run="day 1")
    second = _wells(4, 6, seed=2).assign(run_id=12, run="day 2")
    wells = pd.concat([first, second], ignore_index=True)
    hm = H.plate_heatmap(wells, 4, 6, plate="P", pipeline="p")
    assert hm.run == 11
    _check_every_well(hm, first, "nuclei_count", 4, 6)
    hm = H.plate_heatmap(wells, 4, 6, plate="P", pipeline="p", run=12)
    assert hm.run == 12
    _check_every_well(hm, second, "nuclei_count", 4, 6)
    with pytest.raises(ValueError, match="no run 13"):
        H.plate_heatmap(wells, 4, 6, plate="P", pipeline="p", run=13)
