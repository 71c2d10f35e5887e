"""Field numbers, acquisition runs and time-lapse plates, end to end over the stand-in.

OMERO numbers a well's fields by their index in the well's ordered list of well
samples (omero-model ``mappings/screen.ome.xml``; OMERO.web's plate grid selects
``index(ws)``), which has gaps where a field is missing, and a plate imaged in
several runs (PlateAcquisitions) lists every run's fields in each well. These tests
check that the layout numbers fields that way, that runs are measured each on its own
(never as extra sites), that the layout cache follows runs and indices, and that
every output is written for plates with z stacks and several timepoints, in the form
viewers read it.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from omero_fixtures import BULK_NS, NS, csv_rows, file_name, image_site, iquery_calls, mimetype, standin


@pytest.fixture(scope="module")
def server():
    with standin() as server:
        yield server


def _run(conn, plate_id, **params):
    from openhcs_omero_lib.omero.script_support import run_pipeline_script

    return run_pipeline_script(conn, {"Data_Type": "Plate", "IDs": [plate_id], "Workers": 1,
                                      "Attach_To": "Plate, wells and images", **params})


def _plate_file(store, plate_id, suffix):
    [ann] = [a for a in store.annotations_on("Plate", plate_id, NS) if file_name(store, a).endswith(suffix)]
    return ann


# ---- field numbers -------------------------------------------------------------------------------

def test_sparse_wells_keep_their_field_numbers(server, conn, small_plate):
    """A well missing its first field has field 2 only, not a field 1 that is its
    second image; nothing is measured for the missing fields."""
    from openhcs_omero_lib.omero.pixels import OmeroPixelSource
    from openhcs_omero_lib.omero.plate import load_plate
    from openhcs_omero_lib.plates.imagexpress import ImageXpressSource

    pid = server.import_plate(small_plate.folder, missing={("A01", 1), ("A02", 2)})
    plate = load_plate(conn, pid, cache=None)
    layout = plate.layout
    assert sorted(k[1] for k in layout.image_ids if k[0] == "A01") == [2]
    assert sorted(k[1] for k in layout.image_ids if k[0] == "A02") == [1]
    for key, image_id in layout.image_ids.items():
        assert image_site(server.store, image_id) == key[:2]
    assert layout.sites == small_plate.config.sites and layout.runs == ()
    units = list(layout.units())
    assert len(units) == layout.n_units == small_plate.config.wells * small_plate.config.sites - 2
    assert ("A01", 1, None) not in {u.image_key for u in units}
    with OmeroPixelSource(conn, plate) as remote, ImageXpressSource(small_plate.folder) as local:
        assert np.array_equal(remote.read_plane("A01", 2, 1), local.read_plane("A01", 2, 1))

    outcome = _run(conn, pid)
    assert outcome.ok, outcome.message
    rows = csv_rows(server.store, _plate_file(server.store, pid, "_images.csv"))
    assert sorted((r["well"], int(r["site"])) for r in rows) == sorted(k[:2] for k in layout.image_ids)
    assert all(r["error"] == "" for r in rows)
    wells = {r["well"]: r for r in csv_rows(server.store, _plate_file(server.store, pid, "_wells.csv"))}
    assert wells["A01"]["sites"] == "1" and wells["B01"]["sites"] == str(small_plate.config.sites)


def test_a_field_deleted_through_the_api_leaves_a_gap(server, conn, small_plate):
    """As on a server: Delete2 of a field's image removes its well sample and the
    well's other samples keep their index, for the adapter and for a client's walk."""
    from openhcs_omero_lib.omero import annotations as A
    from openhcs_omero_lib.omero.plate import load_plate
    from openhcs_omero_lib.testing.upload import upload_plate

    def fields_of(plate, well):
        return {key[1]: image for key, image in plate.layout.image_ids.items() if key[0] == well}

    pid = upload_plate(conn, small_plate.folder)
    before = fields_of(load_plate(conn, pid, cache=None), "A01")
    A.delete_objects(conn, {"Image": [before[1]]}, load_plate(conn, pid, cache=None).group_id)
    after = fields_of(load_plate(conn, pid, cache=None), "A01")
    assert after == {site: image for site, image in before.items() if site != 1}
    # BlitzGateway's plate walk: the gap is a null entry at index 0 of the well's list.
    well = next(w for w in conn.getObject("Plate", pid).listChildren() if (w.row, w.column) == (0, 0))
    samples = well.copyWellSamples()
    assert samples[0] is None and samples[1].getImage().getId().getValue() == after[2]


# ---- runs ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_runs(server, timelapse_runs):
    return server.import_plate(timelapse_runs)


def test_each_run_is_measured_on_its_own_not_as_extra_sites(server, conn, two_runs, timelapse_runs):
    from openhcs_omero_lib.omero.pixels import OmeroPixelSource
    from openhcs_omero_lib.omero.plate import load_plate
    from openhcs_omero_lib.plates.imagexpress import ImageXpressSource
    from openhcs_omero_lib.plates.layout import SiteUnit

    plate = load_plate(conn, two_runs, cache=None)
    layout = plate.layout
    with ImageXpressSource(timelapse_runs[1][1]) as second:
        ref = second.layout
        assert layout.sites == ref.sites, "the second run's fields became extra sites"
        assert [r.name for r in layout.runs] == [name for name, _ in timelapse_runs]
        assert layout.n_units == len(timelapse_runs) * ref.n_units
        run_b = layout.runs[1].id
        unit = SiteUnit(ref.wells[0].name, 2, 2, run_b)
        with OmeroPixelSource(conn, plate) as remote:
            assert np.array_equal(remote.read_stack(unit, 1), second.read_stack(SiteUnit(unit.well, 2, 2), 1))
    assert plate.all_runs == layout.runs


def test_runs_choice_and_the_cache(server, conn, two_runs):
    """The layout cache keys on the chosen runs, and renaming a run, removing a field
    or moving one in its well's list invalidates it."""
    from omero.rtypes import rstring

    from openhcs_omero_lib.omero.plate import PlateCache, load_plate

    cache = PlateCache()
    every = load_plate(conn, two_runs, cache=cache)
    first_run = every.layout.runs[0]
    only = load_plate(conn, two_runs, cache=cache, runs=frozenset({first_run.id}))
    assert only.layout.runs == (first_run,) and only.layout.n_units * 2 == every.layout.n_units
    assert {k[2] for k in only.pixels_ids} == {first_run.id}
    before = iquery_calls(server)
    assert load_plate(conn, two_runs, cache=cache) is every
    assert load_plate(conn, two_runs, cache=cache, runs=frozenset({first_run.id})) is only
    assert iquery_calls(server) - before == 2  # a fingerprint each

    store = server.store
    run = store.get("PlateAcquisition", first_run.id)
    run.setName(rstring("Renamed"))
    store.touch(run)
    renamed = load_plate(conn, two_runs, cache=cache)
    assert renamed is not every and renamed.layout.runs[0].name == "Renamed"

    sample = store.children("WellSample", "well", renamed.layout.wells[0].id)[0]
    store.list_index[sample.getId().getValue()] += 1000  # moved in its well's list, nothing else changed
    moved = load_plate(conn, two_runs, cache=cache)
    assert moved is not renamed
    store.list_index[sample.getId().getValue()] -= 1000


def test_runs_that_no_chosen_plate_has_are_refused(server, conn, two_runs):
    from openhcs_omero_lib.omero.script_support import run_pipeline_script

    outcome = run_pipeline_script(conn, {"Data_Type": "Plate", "IDs": [two_runs], "Runs": [999999]})
    assert not outcome.ok and outcome.message.startswith("Nothing attached")
    assert "999999" in outcome.message and "run" in outcome.message


def test_the_command_runs_one_run_and_writes_its_columns(server, two_runs, tmp_path, monkeypatch, capsys):
    from openhcs_omero_lib.cli.app import main

    monkeypatch.setenv("OMERO_USER", server.user.name)
    monkeypatch.setenv("OMERO_PASSWORD", server.password)
    for var in ("OMERO_SESSION_KEY", "OMERO_GROUP"):
        monkeypatch.delenv(var, raising=False)
    [run] = [r for r in server.store.children("PlateAcquisition", "plate", two_runs)
             if r.getName().getValue() == "Run B"]
    code = main(["run", "--omero-plate", str(two_runs), "--run", str(run.getId().getValue()), "--workers", "1",
                 "--outputs", "csv", "--attach", "plate", "--out", str(tmp_path), "--no-progress",
                 "--host", server.host, "--port", str(server.port), "--router", server.router])
    assert code == 0, capsys.readouterr().err
    images = pd.read_csv(tmp_path / f"plate_{two_runs}" / "images.csv", keep_default_na=False)
    assert list(images.columns[:8]) == ["well", "row", "column", "site", "timepoint", "run_id", "run", "image_id"]
    assert set(images["run_id"]) == {run.getId().getValue()} and set(images["run"]) == {"Run B"}
    assert main(["run", str(tmp_path), "--run", "5"]) == 2
    assert "--omero-plate" in capsys.readouterr().err


# ---- what viewers show -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def time_lapse(server, conn, multi_plate):
    """The z/t plate (2 z, 2 timepoints), run through Run_HCS_Pipeline's code once."""
    pid = server.import_plate(multi_plate.folder)
    return pid, _run(conn, pid)


def test_a_time_lapse_plate_attaches_every_output(server, time_lapse, multi_plate):
    from openhcs_omero_lib.omero.sink import table_description

    pid, outcome = time_lapse
    cfg = multi_plate.config
    assert outcome.ok and not outcome.message.startswith("Nothing attached"), outcome.message
    store = server.store
    images = csv_rows(store, _plate_file(store, pid, "_images.csv"))
    assert len(images) == cfg.wells * cfg.sites * cfg.timepoints and "run" not in images[0]
    [table] = store.annotations_on("Plate", pid, BULK_NS)
    assert table.getDescription().getValue() == table_description("nuclei_count")
    data = store.tables[table.getFile().getId().getValue()]
    columns = {h.name: values for h, values in zip(data["headers"], data["columns"])}
    assert len(columns["Well"]) == cfg.wells == len(set(columns["Well"]))
    assert {f"nuclei_count_t{t}" for t in range(1, cfg.timepoints + 1)} <= set(columns)
    wells = csv_rows(store, _plate_file(store, pid, "_wells.csv"))
    for well_id, t1 in zip(columns["Well"], columns["nuclei_count_t1"]):
        [row] = [r for r in wells if int(r["well_id"]) == well_id and r["timepoint"] == "1"]
        assert int(row["nuclei_count"]) == t1
    for well_id in columns["Well"]:
        [pairs] = [a for a in store.annotations_on("Well", well_id, NS) if type(a).__name__ == "MapAnnotationI"]
        keys = {nv.name for nv in pairs.getMapValue()}
        assert {f"nuclei_count_t{t}" for t in range(1, cfg.timepoints + 1)} <= keys
    for image_id in {int(r["image_id"]) for r in images}:
        [ann] = store.annotations_on("Image", image_id, NS)
        assert len(csv_rows(store, ann)) == cfg.timepoints
    summary = json.loads(store.file_text(_plate_file(store, pid, "_results.json").getFile().getId().getValue()))
    assert summary["plate"]["timepoints"] == cfg.timepoints and summary["plate"]["runs"] == []


@pytest.fixture(scope="module")
def one_timepoint(server, conn, small_plate):
    pid = server.import_plate(small_plate.folder)
    outcome = _run(conn, pid)
    assert outcome.ok, outcome.message
    return pid


@pytest.mark.parametrize("plate", ["one_timepoint", "time_lapse"])
def test_omero_web_shows_one_row_for_a_well(server, conn, plate, request):
    """OMERO.web's well panel takes the newest table it can query for ``Well-<id>``
    and shows every matching row: that is the bulk-annotation table and one row, not
    the field-level table (which has no ``Well`` column) nor field rows."""
    import scenarios

    pid = request.getfixturevalue(plate)
    pid = pid[0] if isinstance(pid, tuple) else pid
    [table] = server.store.annotations_on("Plate", pid, BULK_NS)
    for well in conn.getObject("Plate", pid).listChildren():
        file_id, names, rows = scenarios.web_well_rows(conn, pid, well.getId())
        assert len(rows) == 1 and rows[0][names.index("Well")] == well.getId()
        assert file_id == table.getFile().getId().getValue()
    fields = [a for a in server.store.annotations_on("Plate", pid, NS) if mimetype(server.store, a) == "OMERO.tables"]
    assert len(fields) == 1 and fields[0].getFile().getId().getValue() < file_id


# ---- the stand-in is as strict as the server ------------------------------------------------------------

def test_table_queries_refuse_what_the_server_refuses(server, conn, one_timepoint):
    """As omero-py's tables answer getWhereList (hdfstorageV2: a bad condition is an
    ApiUsageException): an unknown column, a string column compared with a number."""
    import omero
    import omero.grid
    import omero.model

    [ann] = server.store.annotations_on("Plate", one_timepoint, BULK_NS)
    table = conn.c.sf.sharedResources().openTable(omero.model.OriginalFileI(ann.getFile().getId().getValue(), False))
    try:
        rows = table.getNumberOfRows()
        headers = table.getHeaders()
        text = next(h.name for h in headers if isinstance(h, omero.grid.StringColumn))
        for condition in ("(NoSuchColumn==1)", f"({text}==1)"):
            with pytest.raises(omero.ApiUsageException):
                table.getWhereList(condition, None, 0, rows, 1)
        well = next(i for i, h in enumerate(headers) if h.name == "Well")
        first = table.read([well], 0, 1).columns[0].values[0]
        hits = table.getWhereList(f"(Well=={first})", None, 0, rows, 1)
        assert hits and all(v == first for v in table.slice([well], hits).columns[0].values)
    finally:
        table.close()


def test_a_plate_save_refuses_samples_of_runs_it_does_not_hold(server, conn, small_plate):
    import omero
    import omero.model
    from omero.rtypes import rint, rstring

    from openhcs_omero_lib.omero.plate import load_plate

    image = next(iter(load_plate(conn, server.import_plate(small_plate.folder), cache=None).layout.image_ids.values()))
    plate, well, sample = omero.model.PlateI(), omero.model.WellI(), omero.model.WellSampleI()
    plate.setName(rstring("stray run"))
    well.setRow(rint(0))
    well.setColumn(rint(0))
    sample.setImage(omero.model.ImageI(image, False))
    run = omero.model.PlateAcquisitionI()
    run.setName(rstring("not the plate's"))
    sample.setPlateAcquisition(run)  # a run never added to the plate
    well.addWellSample(sample)
    plate.addWell(well)
    with pytest.raises(omero.ApiUsageException, match="runs"):
        conn.getUpdateService().saveObject(plate)


# ---- long time series -------------------------------------------------------------------------------------

def test_a_long_time_series_fits_the_table(small_plate):
    """Per-timepoint columns while they fit an OMERO.table; beyond that the first and
    last timepoints and the mean over time."""
    from openhcs_omero_lib.omero.sink import TABLE_COLUMN_LIMIT, well_rows
    from openhcs_omero_lib.plates.layout import Well
    from openhcs_omero_lib.results.tables import PlateResults

    def results(timepoints):
        wells = pd.DataFrame([{"well": "A01", "row": "A", "column": 1, "timepoint": t, "well_id": 7, "sites": 2,
                               "sites_failed": 0, "nuclei_count": 10 + t, "nuclei_area_mean": 100.0 + t}
                              for t in range(1, timepoints + 1)])
        return PlateResults(pd.DataFrame(), wells, {})

    class Layout:
        wells = (Well(1, 1, 7),)

    short = well_rows(results(3), Layout())
    assert list(short["nuclei_count_t3"]) == [13] and len(short) == 1
    long = well_rows(results(400), Layout())
    assert len(long.columns) <= TABLE_COLUMN_LIMIT
    row = long.iloc[0]
    assert (row["nuclei_count_t1"], row["nuclei_count_t400"]) == (11, 410)
    assert row["nuclei_count_time_mean"] == pytest.approx(np.mean(range(11, 411)))
