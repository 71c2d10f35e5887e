"""The ``openhcs-omero`` command and the files a run writes."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from importlib.metadata import version
from pathlib import Path

import pandas as pd
import pytest
import yaml

from openhcs_omero_lib.cli import local as cli
from openhcs_omero_lib.cli.app import main
from openhcs_omero_lib.pipeline.loading import preset_text
from openhcs_omero_lib.plates.synthetic import cache_dir

KEYS = ["well", "row", "column", "site", "timepoint"]


def _truth_keys(folder: Path) -> list[tuple[str, int, int]]:
    with open(folder / "ground_truth.csv", newline="") as fh:
        return [(r["well"], int(r["site"]), int(r["timepoint"])) for r in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def run_output(small_plate, tmp_path_factory):
    """``openhcs-omero run`` on the small plate, once; its output folder and console text."""
    out = tmp_path_factory.mktemp("run") / "out"
    # A module-scoped fixture cannot use capsys: capture by hand.
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["run", str(small_plate.folder), "--workers", "1", "--out", str(out), "--no-progress"])
    return code, out, stdout.getvalue(), stderr.getvalue()


def test_run_succeeds_and_writes_three_files_and_a_heat_map(run_output):
    code, out, stdout, _ = run_output
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["heatmap.png", "images.csv", "results.json", "wells.csv"]
    assert "sites within 5%" in stdout


def test_images_csv_one_row_per_site_and_timepoint(run_output, small_plate):
    _, out, _, _ = run_output
    images = pd.read_csv(out / "images.csv", keep_default_na=False)
    assert list(images.columns[:6]) == KEYS + ["nuclei_count"]
    assert images.columns[-1] == "error"
    assert {"nuclei_area_mean", "nuclei_ch1_intensity_mean", "nuclei_ch2_intensity_mean"} <= set(images.columns)
    keys = list(zip(images["well"], images["site"], images["timepoint"]))
    assert sorted(keys) == sorted(_truth_keys(small_plate.folder))
    assert len(keys) == len(set(keys)) == small_plate.config.wells * small_plate.config.sites
    # row letters and column numbers agree with the well name
    assert all(w == f"{r}{c:02d}" for w, r, c in zip(images["well"], images["row"], images["column"]))
    assert (images["error"] == "").all()
    assert (images["nuclei_count"] > 0).all()


def test_wells_csv_counts_are_sums_of_sites(run_output, small_plate):
    _, out, _, _ = run_output
    images = pd.read_csv(out / "images.csv")
    wells = pd.read_csv(out / "wells.csv")
    assert list(wells.columns[:4]) == ["well", "row", "column", "timepoint"]
    assert len(wells) == small_plate.config.wells
    per_well = images.groupby("well")["nuclei_count"].sum()
    for row in wells.itertuples():
        assert row.nuclei_count == per_well[row.well]
        assert row.sites == small_plate.config.sites and row.sites_failed == 0
    mean_area = images.groupby("well")["nuclei_area_mean"].mean()
    for row in wells.itertuples():
        assert row.nuclei_area_mean == pytest.approx(mean_area[row.well])


def test_results_json_summary(run_output, small_plate):
    _, out, _, _ = run_output
    summary = json.loads((out / "results.json").read_text())
    assert summary["plate"]["name"] == small_plate.config.name
    assert summary["plate"]["wells"] == small_plate.config.wells
    assert [c["name"] for c in summary["plate"]["channels"]] == ["DAPI", "FITC"]
    assert summary["pipeline"]["name"] == "nuclei_count"
    preset = yaml.safe_load(preset_text("nuclei_count"))
    spec = summary["pipeline"]["spec"]
    assert spec["name"] == "nuclei_count"
    assert [s["op"] for s in spec["steps"]] == [s["op"] for s in preset["steps"]]
    # the recorded spec is the one bound to the plate: "all" became the plate's channels
    assert spec["steps"][-1]["intensity"] == ["ch1", "ch2"]
    assert summary["openhcs_omero_version"] == version("openhcs-omero")
    timing = summary["timing"]
    assert timing["units"] == small_plate.config.wells * small_plate.config.sites
    assert timing["finished"] >= timing["started"] and timing["seconds"] >= 0
    assert summary["errors"] == [] and summary["units_failed"] == 0
    assert summary["workers"] == 1


# ---- bad input ---------------------------------------------------------------------

def _bad_plate_empty(tmp_path: Path, small_plate) -> list[str]:
    (tmp_path / "empty").mkdir()
    return [str(tmp_path / "empty")]


def _bad_plate_unrelated(tmp_path: Path, small_plate) -> list[str]:
    folder = tmp_path / "stuff"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    (folder / "table.csv").write_text("a,b\n")
    return [str(folder)]


def _bad_unknown_step(tmp_path: Path, small_plate) -> list[str]:
    spec = tmp_path / "bad.yaml"
    spec.write_text(preset_text("nuclei_count").replace("op: fill_holes", "op: fill_all_holes"))
    return [str(small_plate.folder), "--pipeline", str(spec)]


def _bad_missing_channel(tmp_path: Path, small_plate) -> list[str]:
    spec = tmp_path / "ch3.yaml"
    spec.write_text(preset_text("nuclei_count").replace("input: ch1", "input: ch3"))
    return [str(small_plate.folder), "--pipeline", str(spec)]


def _bad_unknown_preset(tmp_path: Path, small_plate) -> list[str]:
    return [str(small_plate.folder), "--pipeline", "no_such_pipeline"]


def _bad_demo_and_plate(tmp_path: Path, small_plate) -> list[str]:
    return [str(small_plate.folder), "--demo"]


BAD_INPUTS = {
    "not_a_plate_empty": (_bad_plate_empty, "not an ImageXpress plate"),
    "not_a_plate_unrelated_files": (_bad_plate_unrelated, "not an ImageXpress plate"),
    "unknown_step": (_bad_unknown_step, "unknown step 'fill_all_holes'"),
    "missing_channel": (_bad_missing_channel, "reads ch3"),
    "unknown_preset": (_bad_unknown_preset, "no_such_pipeline"),
    "demo_and_plate": (_bad_demo_and_plate, "--demo"),
}


def _run_bad(case, tmp_path, small_plate, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    make, words = BAD_INPUTS[case]
    args = make(tmp_path, small_plate)
    out = tmp_path / "outputs" / "out"
    code = main(["run", *args, "--workers", "1", "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    return code, out, captured, words


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_run_bad_input_fails_with_error_and_no_output(case, tmp_path, small_plate, capsys, monkeypatch):
    code, out, captured, words = _run_bad(case, tmp_path, small_plate, capsys, monkeypatch)
    assert code == 2
    lines = captured.err.splitlines()
    assert lines and lines[-1].startswith("openhcs-omero: error: ")
    assert words in lines[-1]
    assert "Traceback" not in captured.err
    assert not out.exists() and not (tmp_path / "outputs").exists()
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("case", [
    c for c in sorted(BAD_INPUTS)])
def test_run_bad_input_prints_exactly_one_line(case, tmp_path, small_plate, capsys, monkeypatch):
    code, _, captured, _ = _run_bad(case, tmp_path, small_plate, capsys, monkeypatch)
    assert code == 2
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("openhcs-omero: error: ")


def test_run_missing_channel_message_names_plate_channels(tmp_path, small_plate, capsys, monkeypatch):
    code, _, captured, _ = _run_bad("missing_channel", tmp_path, small_plate, capsys, monkeypatch)
    assert code == 2
    last = captured.err.splitlines()[-1]
    assert "ch3" in last and "ch1 (DAPI)" in last and "ch2 (FITC)" in last


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_run_workers_must_be_positive(value, tmp_path, small_plate, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main(["run", str(small_plate.folder), "--workers", value, "--out", str(out)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("openhcs-omero: error:") and "--workers" in err
    assert not out.exists()


# ---- make-plate -------------------------------------------------------------------------

def test_make_plate_writes_ground_truth(tmp_path, capsys):
    folder = tmp_path / "made"
    code = main(["make-plate", str(folder), "--wells", "3", "--sites", "2", "--channels", "1",
                 "--timepoints", "2", "--size", "64", "--seed", "3", "--name", "MADE"])
    assert code == 0
    assert capsys.readouterr().err == ""
    with open(folder / "ground_truth.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["well", "site", "timepoint", "nuclei_count"]
    body = rows[1:]
    assert len(body) == 3 * 2 * 2
    assert {(w, s, t) for w, s, t, _ in body} == {
        (w, str(s), str(t)) for w in ("A01", "A02", "A03") for s in (1, 2) for t in (1, 2)}
    assert all(int(n) >= 0 for *_, n in body)
    assert (folder / "MADE.HTD").exists()
    # The plate is usable.
    assert main(["validate", "nuclei_count", "--plate", str(folder)]) == 0


def test_make_plate_refuses_a_non_empty_folder(tmp_path, capsys):
    folder = tmp_path / "busy"
    folder.mkdir()
    (folder / "keep.txt").write_text("precious")
    code = main(["make-plate", str(folder), "--wells", "1", "--sites", "1", "--size", "64"])
    assert code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("openhcs-omero: error: ")
    assert "not empty" in lines[0]
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]
    assert (folder / "keep.txt").read_text() == "precious"


def test_make_plate_rejects_too_small_planes(tmp_path, capsys):
    code = main(["make-plate", str(tmp_path / "tiny"), "--size", "32"])
    assert code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "size" in lines[0]


# ---- the demo plate -----------------------------------------------------------------------

def test_run_demo_generates_the_plate_once(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.chdir(tmp_path)
    assert cache_dir() == cache / "openhcs-omero"

    out1 = tmp_path / "demo1"
    assert main(["run", "--demo", "--workers", "1", "--out", str(out1), "--no-progress"]) == 0
    first = capsys.readouterr()
    assert "generating the demo plate" in first.err
    plates = [p for p in (cache / "openhcs-omero").iterdir()]
    assert len(plates) == 1, plates  # the plate, no staging folder left
    truth = plates[0] / "ground_truth.csv"
    assert truth.exists()
    stamp = truth.stat().st_mtime_ns
    images = pd.read_csv(out1 / "images.csv")
    cfg = cli.DEMO_CONFIG
    assert len(images) == cfg["wells"] * cfg["sites"]
    assert "sites within 5%" in first.out

    out2 = tmp_path / "demo2"
    assert main(["run", "--demo", "--workers", "1", "--out", str(out2), "--no-progress"]) == 0
    second = capsys.readouterr()
    assert "generating" not in second.err
    assert truth.stat().st_mtime_ns == stamp
    assert [p for p in (cache / "openhcs-omero").iterdir()] == plates
    pd.testing.assert_frame_equal(pd.read_csv(out2 / "images.csv"), images)
    assert not (tmp_path / "results").exists()


# ---- other commands -----------------------------------------------------------------------

def test_describe_lists_virtual_paths(small_plate, capsys):
    assert main(["describe", str(small_plate.folder), "--samples", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "SMALL" in out[0] and "4 wells" in out[0]
    assert out[1].startswith(f"{4 * 2 * 2} planes")
    assert out[2:] == ["  /plates/SMALL/A01_s001_w1_z001_t001.tif",
                       "  /plates/SMALL/A01_s001_w2_z001_t001.tif",
                       "  /plates/SMALL/A01_s002_w1_z001_t001.tif"]


def test_show_pipeline_prints_the_preset(capsys):
    assert main(["show-pipeline", "nuclear_translocation"]) == 0
    assert capsys.readouterr().out == preset_text("nuclear_translocation")
    assert main(["show-pipeline", "nope"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "unknown preset 'nope'" in err[0]


def test_a_run_checks_the_files_of_the_channels_it_reads(small_plate, tmp_path, capsys, monkeypatch):
    """The file check runs while two workers compute: a damaged file of a channel the
    pipeline never reads does not stop its run; one of a channel it reads stops it in
    one line, and nothing is written."""
    import shutil

    from openhcs_omero_lib.bench.plain_loop import SIMPLE_PIPELINE  # reads channel 1 only

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "plate"
    shutil.copytree(small_plate.folder, folder)
    damaged = sorted(folder.rglob("*_w2.TIF"))[-1]
    damaged.write_bytes(damaged.read_bytes()[:2000])
    spec = tmp_path / "channel1.yaml"
    spec.write_text(SIMPLE_PIPELINE)
    capsys.readouterr()

    code = main(["run", str(folder), "--pipeline", str(spec), "--workers", "2", "--out", str(tmp_path / "ch1"),
                 "--no-progress", "--no-heatmap"])
    assert code == 0, capsys.readouterr().err
    images = pd.read_csv(tmp_path / "ch1" / "images.csv", keep_default_na=False)
    assert len(images) == small_plate.config.wells * small_plate.config.sites
    assert (images["error"] == "").all()

    capsys.readouterr()
    code = main(["run", str(folder), "--pipeline", "nuclei_count", "--workers", "2",
                 "--out", str(tmp_path / "both"), "--no-progress", "--no-heatmap"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [err.strip()] and f"{damaged.name} is truncated" in err
    assert not (tmp_path / "both").exists()
