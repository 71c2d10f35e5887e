"""Run_HCS_Pipeline.py end to end, run as OMERO's Processor runs it (a subprocess with
the job's session key), against the stand-in.

The counts attached (per-well CSV, OMERO.table) are checked against the synthetic
plate's ground truth like the engine's accuracy tests: within 5% on at least 95%.
"""

from __future__ import annotations

import collections
from types import SimpleNamespace

import pytest

from omero_fixtures import (
    BULK_NS,
    NS,
    RUN_SCRIPT,
    csv_rows,
    file_name,
    image_site,
    mimetype,
    plate_members,
    read_truth,
    standin,
    well_names,
    within,
)


def _run(server, plate_id, attach_to, workers=2):
    from omero.rtypes import rint, rlist, rlong, rstring

    from openhcs_omero_lib.testing.processor import run_script

    return run_script(server, RUN_SCRIPT, {
        "Data_Type": rstring("Plate"), "IDs": rlist([rlong(plate_id)]), "Workers": rint(workers),
        "Attach_To": rstring(attach_to)})


@pytest.fixture(scope="module")
def server(normal_plate, small_plate):
    with standin() as server:
        server.full_id = server.import_plate(normal_plate.folder)
        server.plate_only_id = server.import_plate(small_plate.folder)
        yield server


@pytest.fixture(scope="module")
def full(server):
    """Results on the plate, its wells and its images, with two workers."""
    return SimpleNamespace(run=_run(server, server.full_id, "Plate, wells and images"), pid=server.full_id)


@pytest.fixture(scope="module")
def plate_only(server):
    return SimpleNamespace(run=_run(server, server.plate_only_id, "Plate", workers=1), pid=server.plate_only_id)


def _ok(run):
    assert run.errors == [] and run.returncode == 0, (run.errors, run.stderr[-3000:])
    assert "Traceback" not in run.stderr, run.stderr[-3000:]


def _plate_files(server, pid) -> dict[str, object]:
    """The plate's result FileAnnotations by file name."""
    anns = server.store.annotations_on("Plate", pid, NS)
    by_name = {file_name(server.store, a): a for a in anns}
    assert len(by_name) == len(anns), "two files of one name on the plate"
    return by_name


def _truth_per_well(folder) -> dict[str, int]:
    per_well = collections.Counter()
    for (well, _, _), n in read_truth(folder).items():
        per_well[well] += n
    return dict(per_well)


def test_run_succeeds(full):
    _ok(full.run)


def test_wells_csv_counts_match_ground_truth(server, full, normal_plate):
    _ok(full.run)
    wells_csv = _plate_files(server, full.pid)["nuclei_count_wells.csv"]
    rows = csv_rows(server.store, wells_csv)
    truth = _truth_per_well(normal_plate.folder)
    assert sorted(r["well"] for r in rows) == sorted(truth)
    assert {int(r["sites"]) for r in rows} == {normal_plate.config.sites}
    ok = [within(int(r["nuclei_count"]), truth[r["well"]]) for r in rows]
    assert sum(ok) / len(ok) >= 0.95, [(r["well"], r["nuclei_count"], truth[r["well"]]) for r in rows]
    # well IDs in the CSV are this plate's wells
    names = well_names(server.store, full.pid)
    assert {int(r["well_id"]): r["well"] for r in rows} == names


def test_images_csv_counts_match_ground_truth(server, full, normal_plate):
    _ok(full.run)
    rows = csv_rows(server.store, _plate_files(server, full.pid)["nuclei_count_images.csv"])
    truth = read_truth(normal_plate.folder)
    assert sorted((r["well"], int(r["site"]), int(r["timepoint"])) for r in rows) == sorted(truth)
    ok = [within(int(r["nuclei_count"]), truth[(r["well"], int(r["site"]), int(r["timepoint"]))]) for r in rows]
    assert sum(ok) / len(ok) >= 0.95
    for r in rows:  # each row names the OMERO image of its field
        assert image_site(server.store, int(r["image_id"])) == (r["well"], int(r["site"]))


def _table_rows(store, ann) -> tuple[dict, list[dict]]:
    """A table's columns by name and its rows, from the stand-in's store."""
    table = store.tables[ann.getFile().getId().getValue()]
    by_name = {h.name: (h, values) for h, values in zip(table["headers"], table["columns"])}
    assert len(by_name) == len(table["headers"])
    assert len({len(values) for _, values in by_name.values()}) == 1
    return by_name, [dict(zip(by_name, values)) for values in zip(*(v for _, v in by_name.values()))]


def test_bulk_table_has_one_row_per_well_with_counts_matching_ground_truth(server, full, normal_plate):
    """The table viewers look wells up in holds well rows only (OMERO.web shows every
    row whose Well matches, OMERO.parade keeps the last one per well)."""
    import omero.grid

    _ok(full.run)
    store = server.store
    tables = store.annotations_on("Plate", full.pid, BULK_NS)
    assert len(tables) == 1
    by_name, rows = _table_rows(store, tables[0])
    assert isinstance(by_name["Well"][0], omero.grid.WellColumn)
    assert "Image" not in by_name and "Level" not in by_name
    names = well_names(store, full.pid)
    per_well = _truth_per_well(normal_plate.folder)
    assert sorted(r["Well"] for r in rows) == sorted(names)  # each well once
    assert all(names[r["Well"]] == r["well_name"] for r in rows)
    ok = [within(r["nuclei_count"], per_well[names[r["Well"]]]) for r in rows]
    assert sum(ok) / len(ok) >= 0.95


def test_field_table_in_the_bundles_namespace_holds_the_fields(server, full, normal_plate):
    import omero.grid

    _ok(full.run)
    store = server.store
    [ann] = [a for a in store.annotations_on("Plate", full.pid, NS) if mimetype(store, a) == "OMERO.tables"]
    assert file_name(store, ann).endswith("_fields.omero.h5")
    by_name, rows = _table_rows(store, ann)
    assert isinstance(by_name["Image"][0], omero.grid.ImageColumn)
    # Nothing a viewer looking up a well could take for the well's numbers.
    assert not {"Well", "well"} & set(by_name)
    truth = read_truth(normal_plate.folder)
    assert len(rows) == len(truth)
    ok = []
    for r in rows:
        well, site = image_site(store, r["Image"])
        assert (r["well_name"], r["field"]) == (well, site)
        ok.append(within(r["nuclei_count"], truth[(well, site, r["timepoint"])]))
    assert sum(ok) / len(ok) >= 0.95


def test_bulk_table_reads_through_the_tables_api(server, full):
    """What OMERO.web does with the table: open it, read headers and rows."""
    import omero.grid
    import omero.model

    from omero_fixtures import gateway

    _ok(full.run)
    ann = server.store.annotations_on("Plate", full.pid, BULK_NS)[0]
    stored = server.store.tables[ann.getFile().getId().getValue()]
    with gateway(server) as conn:
        file_id = ann.getFile().getId().getValue()
        table = conn.c.sf.sharedResources().openTable(omero.model.OriginalFileI(file_id, False))
        try:
            headers = table.getHeaders()
            rows = table.getNumberOfRows()
            data = table.read(list(range(len(headers))), 0, rows)
        finally:
            table.close()
    assert [h.name for h in headers] == [h.name for h in stored["headers"]]
    assert any(isinstance(h, omero.grid.StringColumn) for h in headers)
    assert [list(c.values) for c in data.columns] == [list(v) for v in stored["columns"]]
    assert server.open_stateful["Table"] == 0


def test_annotations_on_plate_wells_and_images(server, full):
    _ok(full.run)
    store = server.store
    plate_files = _plate_files(server, full.pid)
    field_table = next(name for name in plate_files if name.endswith("_fields.omero.h5"))
    assert {name: mimetype(store, a) for name, a in plate_files.items()} == {
        "nuclei_count_wells.csv": "text/csv", "nuclei_count_images.csv": "text/csv",
        "nuclei_count_results.json": "application/json", field_table: "OMERO.tables",
        "nuclei_count_heatmap.png": "image/png"}
    wells_rows = {r["well"]: r for r in csv_rows(store, plate_files["nuclei_count_wells.csv"])}
    members = plate_members(store, full.pid)
    names = well_names(store, full.pid)
    for wid in members["Well"]:
        anns = store.annotations_on("Well", wid, NS)
        files = [a for a in anns if type(a).__name__ == "FileAnnotationI"]
        maps = [a for a in anns if type(a).__name__ == "MapAnnotationI"]
        assert len(files) == 1 and len(maps) == 1 and len(anns) == 2, names[wid]
        assert mimetype(store, files[0]) == "text/csv"
        assert {r["well"] for r in csv_rows(store, files[0])} == {names[wid]}
        pairs = {nv.name: nv.value for nv in maps[0].getMapValue()}
        assert pairs["nuclei_count"] == wells_rows[names[wid]]["nuclei_count"]
    for iid in members["Image"]:
        anns = store.annotations_on("Image", iid, NS)
        assert len(anns) == 1
        assert mimetype(store, anns[0]) == "text/csv"
        assert [int(r["image_id"]) for r in csv_rows(store, anns[0])] == [iid]


def test_message_and_file_annotation_output(server, full):
    _ok(full.run)
    message = full.run.output("Message")
    plate_files = _plate_files(server, full.pid)
    rows = csv_rows(server.store, plate_files["nuclei_count_wells.csv"])
    total = sum(int(r["nuclei_count"]) for r in rows)
    assert "nuclei_count" in message
    assert f"plate {full.pid}" in message
    assert str(total) in message
    fields = len(plate_members(server.store, full.pid)["Image"])
    assert f"{fields} fields" in message
    assert not message.startswith("Nothing attached")
    output = full.run.output("File_Annotation")
    assert output is not None
    assert output.getId().getValue() == plate_files["nuclei_count_wells.csv"].getId().getValue()


def test_activities_panel_reads_the_outputs(server, full):
    """OMERO.web reads a finished script's results once, in one pass that reads each
    object's file without a guard: the File_Annotation must come with its file."""
    from omero_clients import web_activities

    _ok(full.run)
    wells_csv = _plate_files(server, full.pid)["nuclei_count_wells.csv"]
    shown = web_activities(full.run.outputs)
    assert shown["Message"] == full.run.output("Message")
    assert shown["results"]["File_Annotation"] == {
        "id": wells_csv.getId().getValue(), "type": "FileAnnotation", "name": "nuclei_count_wells.csv"}
    ofile = full.run.output("File_Annotation").getFile()
    stored = server.store.get("OriginalFile", ofile.getId().getValue())
    assert (ofile.getName().getValue(), ofile.getMimetype().getValue(), ofile.getSize().getValue()) == \
        ("nuclei_count_wells.csv", "text/csv", len(server.store.files[stored.getId().getValue()]))


def test_attach_to_plate_only_leaves_wells_and_images_alone(server, plate_only):
    _ok(plate_only.run)
    store = server.store
    assert set(_plate_files(server, plate_only.pid)) == {
        "nuclei_count_wells.csv", "nuclei_count_images.csv", "nuclei_count_results.json",
        f"nuclei_count_{server.store.get('Plate', plate_only.pid).getName().getValue()}_fields.omero.h5",
        "nuclei_count_heatmap.png"}
    assert len(store.annotations_on("Plate", plate_only.pid, BULK_NS)) == 1
    members = plate_members(store, plate_only.pid)
    for kind in ("Well", "Image"):
        for oid in members[kind]:
            assert store.annotations_on(kind, oid) == [], (kind, oid)
    assert f"plate {plate_only.pid}" in plate_only.run.output("Message")
