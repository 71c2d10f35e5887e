"""``run --qc``: the QC montage of the fields with the lowest and highest counts and
the failed ones, with the segmentation outlined; and the heat map ``run`` writes
beside the CSVs, read back from the files."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import colors
from PIL import Image

from openhcs_omero_lib import engine
from openhcs_omero_lib.cli.app import main
from openhcs_omero_lib.pictures import heatmap as H
from openhcs_omero_lib.pictures import montage as M
from openhcs_omero_lib.pipeline.loading import parse_spec, preset_text
from openhcs_omero_lib.plates import synthetic
from openhcs_omero_lib.plates.imagexpress import ImageXpressSource, image_filename, plane_dir

FAILED_WELL, PARTLY_FAILED = "A02", ("A03", 2)


@pytest.fixture(scope="module")
def broken_plate(tmp_path_factory):
    """8 wells x 2 fields; both fields of A02 and field 2 of A03 unreadable."""
    folder = tmp_path_factory.mktemp("qc") / "plate"
    synthetic.make_plate(folder, synthetic.SyntheticPlateConfig(wells=8, sites=2, channels=2, size=96, seed=7,
                                                                name="QC"))
    with ImageXpressSource(folder) as source:
        layout = source.layout
    for well, site in [(FAILED_WELL, 1), (FAILED_WELL, 2), PARTLY_FAILED]:
        (plane_dir(folder, layout, 1, 1) / image_filename(layout, well, site, 1)).write_bytes(b"not a TIFF")
    return folder


@pytest.fixture(scope="module")
def qc_run(broken_plate, tmp_path_factory):
    out = tmp_path_factory.mktemp("qc-out") / "out"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["run", str(broken_plate), "--workers", "1", "--out", str(out), "--no-progress", "--qc",
                     "--allow-bad-files"])
    return code, out, stderr.getvalue()


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def _rgb(colour) -> np.ndarray:
    return np.round(np.array(colors.to_rgb(colour)) * 255).astype(int)


def test_choose_fields_picks_the_extreme_wells_and_the_failed_fields():
    rows = []
    totals = {"A01": (5, 7), "A02": (50, 60), "A03": (1, 2), "A04": (30, 31), "B01": (90, 1), "B02": (20, 20)}
    for well, counts in totals.items():
        for site, n in enumerate(counts, 1):
            rows.append({"well": well, "site": site, "timepoint": 1, "nuclei_count": n, "error": ""})
    rows.append({"well": "B03", "site": 1, "timepoint": 1, "nuclei_count": None, "error": "OSError: gone"})
    rows.append({"well": "B03", "site": 2, "timepoint": 1, "nuclei_count": None, "error": "OSError: gone"})
    chosen = M.choose_fields(pd.DataFrame(rows), "nuclei_count", per_row=2)
    assert [(c.row, c.unit.well, c.unit.site, c.value) for c in chosen] == [
        ("lowest", "A03", 1, 1.0), ("lowest", "A01", 1, 5.0),       # totals 3, 12
        ("highest", "A02", 2, 60.0), ("highest", "B01", 1, 90.0),   # totals 110, 91
        ("failed", "B03", 1, None)]                                  # one failed field per well
    assert chosen[-1].error == "OSError: gone"


def test_the_objects_channel_is_traced_back_through_the_steps():
    assert M.objects_channel(parse_spec(preset_text("nuclei_count"), "nuclei_count")) == 1
    spec = parse_spec("""
name: second_channel
steps:
  - {op: gaussian, input: ch2, output: smooth, sigma: 1}
  - {op: threshold, input: smooth, output: mask}
  - {op: label, input: mask, output: cells}
  - {op: expand_labels, input: cells, output: bigger, distance: 2}
  - {op: measure_objects, labels: bigger}
""", "test")
    assert M.objects_channel(spec) == 2


def test_run_writes_the_heat_map_and_the_montage_beside_the_csvs(qc_run):
    code, out, stderr = qc_run
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["heatmap.png", "images.csv", "qc_montage.png",
                                                     "results.json", "wells.csv"]
    for name in ("heatmap.png", "qc_montage.png"):
        image = Image.open(out / name)
        assert image.format == "PNG" and 600 <= image.size[0] <= 1300, (name, image.size)


def test_the_written_heat_map_marks_the_failed_wells(qc_run, broken_plate):
    _, out, _ = qc_run
    wells = pd.read_csv(out / "wells.csv", keep_default_na=False, na_values=[""])
    with ImageXpressSource(broken_plate) as source:
        layout = source.layout
    hm = H.plate_heatmap(wells, layout.rows, layout.columns, plate=layout.name, pipeline="nuclei_count")
    written = (out / "heatmap.png").read_bytes()
    assert written == hm.png  # the same picture, so hm's geometry is the file's
    pixels = _pixels(written)
    x, y = hm.centres[FAILED_WELL]
    assert np.abs(pixels[int(y), int(x + 0.3 * hm.cell)] - _rgb(H.FAILED)).max() <= 2
    x, y = hm.centres[PARTLY_FAILED[0]]
    assert np.abs(pixels[int(y - 0.34 * hm.cell), int(x + 0.34 * hm.cell)] - _rgb(H.FAILED)).max() <= 2
    assert hm.failed == (FAILED_WELL,) and hm.partly_failed == (PARTLY_FAILED[0],)
    assert len(hm.values) == len(wells) - 1


@pytest.fixture(scope="module")
def montage(broken_plate):
    spec = parse_spec(preset_text("nuclei_count"), "nuclei_count")
    with ImageXpressSource(broken_plate) as source:
        bound = engine.bind(spec, source.layout)
        results = engine.run_pipeline(source, spec, workers=1, outlines=True)
        picture = M.qc_montage(results, source.read_stack, bound, "nuclei_count")
    return results, picture


def test_the_montage_shows_lowest_highest_and_failed_fields(montage, qc_run):
    results, picture = montage
    rows = [t.choice.row for t in picture.tiles]
    assert rows == ["lowest"] * 3 + ["highest"] * 3 + ["failed"] * 2
    failed = {(t.choice.unit.well, t.choice.unit.site) for t in picture.tiles if t.choice.row == "failed"}
    assert failed == {(FAILED_WELL, 1), PARTLY_FAILED}
    ok = results.images[results.images["error"] == ""]
    totals = ok.groupby("well")["nuclei_count"].sum()
    for row, expected in (("lowest", sorted(totals)[:3]), ("highest", sorted(totals)[-3:])):
        wells = [t.choice.unit.well for t in picture.tiles if t.choice.row == row]
        assert sorted(totals[wells]) == expected, row
        for t in picture.tiles:  # the well's field with the lowest (highest) count
            if t.choice.row == row:
                fields = ok[ok["well"] == t.choice.unit.well]["nuclei_count"]
                assert t.choice.value == (fields.min() if row == "lowest" else fields.max())
    _, out, _ = qc_run
    assert (out / "qc_montage.png").read_bytes() == picture.png  # the same as `run --qc` wrote


def test_the_montage_outlines_every_object_where_it_is(montage):
    results, picture = montage
    pixels = _pixels(picture.png)
    assert pixels.shape == (picture.height, picture.width, 3)
    yellow = _rgb(M.OUTLINE_COLOURS[0])
    for tile, (x0, y0, x1, y1) in zip(picture.tiles, picture.boxes):
        box = pixels[int(y0) + 3:int(y1) - 3, int(x0) + 3:int(x1) - 3]
        is_outline = np.abs(box - yellow).max(axis=2) <= 60
        if tile.choice.row == "failed":
            assert not is_outline.any()
            red = _rgb(M.FAILED)
            assert np.abs(pixels[int((y0 + y1) / 2), int(x0) + 1] - red).max() <= 30  # the red frame
            assert tile.image is None and "TIFF" in tile.read_error + tile.choice.error
            continue
        found = tile.outlines["nuclei"]
        count = results.images.set_index(["well", "site"]).loc[(tile.choice.unit.well, tile.choice.unit.site),
                                                                 "nuclei_count"]
        assert found.count == count == tile.choice.value
        scale = (x1 - x0) / tile.image.shape[1]
        missed = 0
        for _, poly in found.polygons():
            px, py = x0 + poly[0, 0] * scale, y0 + poly[0, 1] * scale  # the polygon's first vertex
            near = pixels[int(py) - 2:int(py) + 3, int(px) - 2:int(px) + 3]
            missed += not (np.abs(near - yellow).max(axis=2) <= 60).any()
        assert missed <= len(found.owner) // 10, (tile.choice.unit, missed)


def test_bad_picture_choices_stop_the_run_before_it_writes(tmp_path, small_plate, capsys):
    out = tmp_path / "out"
    code = main(["run", str(small_plate.folder), "--workers", "1", "--out", str(out), "--no-progress",
                 "--heatmap", "nuclei_size"])
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("openhcs-omero: error: --heatmap: ")
    assert "nuclei_count" in err[0]


def test_no_heatmap_writes_the_tables_only(tmp_path, small_plate):
    out = tmp_path / "out"
    assert main(["run", str(small_plate.folder), "--workers", "1", "--out", str(out), "--no-progress",
                 "--no-heatmap", "--heatmap", "nuclei_area_mean"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["images.csv", "results.json", "wells.csv"]


def test_the_heat_map_shows_the_chosen_measurement(tmp_path, small_plate):
    out = tmp_path / "out"
    assert main(["run", str(small_plate.folder), "--workers", "1", "--out", str(out), "--no-progress",
                 "--heatmap", "nuclei_area_mean"]) == 0
    wells = pd.read_csv(out / "wells.csv")
    with ImageXpressSource(small_plate.folder) as source:
        layout = source.layout
    mean = H.plate_heatmap(wells, layout.rows, layout.columns, plate=layout.name, pipeline="nuclei_count",
                           measurement="nuclei_area_mean")
    count = H.plate_heatmap(wells, layout.rows, layout.columns, plate=layout.name, pipeline="nuclei_count")
    written = (out / "heatmap.png").read_bytes()
    assert written == mean.png and written != count.png
    assert Path(out / "heatmap.png").stat().st_size == len(mean.png)
