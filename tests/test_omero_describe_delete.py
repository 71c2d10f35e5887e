"""Describe_Plate.py and Delete_HCS_Results.py, run as the server runs scripts."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from omero_fixtures import (
    BULK_NS,
    DELETE_SCRIPT,
    DESCRIBE_SCRIPT,
    NS_PREFIX,
    gateway,
    link_annotation,
    ns_of,
    plate_members,
    standin,
)


def _selection(plate_id):
    from omero.rtypes import rlist, rlong, rstring

    return {"Data_Type": rstring("Plate"), "IDs": rlist([rlong(plate_id)])}


@pytest.fixture(scope="module")
def server(small_plate):
    with standin() as server:
        server.plate_id = server.import_plate(small_plate.folder)
        yield server


# ---- Describe_Plate ---------------------------------------------------------------------------

def test_describe_names_wells_sites_channels_and_virtual_files(server, small_plate):
    from openhcs_omero_lib.plates.imagexpress import ImageXpressSource
    from openhcs_omero_lib.plates.virtual_backend import PlaneCoord, VirtualBackend
    from openhcs_omero_lib.testing.processor import run_script

    run = run_script(server, DESCRIBE_SCRIPT, _selection(server.plate_id))
    assert run.errors == [] and run.returncode == 0, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    message = run.output("Message")
    cfg = small_plate.config
    with ImageXpressSource(small_plate.folder) as source:
        layout = source.layout
    assert f"plate {server.plate_id}" in message
    assert f"{cfg.wells} wells" in message
    assert f"{cfg.sites} sites" in message
    for channel in layout.channels:
        assert channel.name in message
    names = re.findall(r"[A-Z]{1,2}\d{2}_s\d{3}_w\d+_z\d{3}_t\d{3}\.tif", message)
    assert names, message
    # the names are the plate's planes (checked against the instrument's layout)
    backend = VirtualBackend(layout, root=f"/omero/plate_{server.plate_id}")
    for name in names:
        coord = backend.parse(name)
        assert isinstance(coord, PlaneCoord) and coord.well in layout.well_names
    assert backend.root in message


# ---- Delete_HCS_Results ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def annotated(server):
    """Results of two pipelines on plate, wells and images, plus annotations of other
    tools that must survive a delete."""
    import omero.model
    from omero.rtypes import rstring

    from openhcs_omero_lib.omero.script_support import run_pipeline_script

    pid = server.plate_id
    store = server.store
    members = plate_members(store, pid)
    with gateway(server) as conn:
        for pipeline in ("nuclei_count", "nuclear_translocation"):
            outcome = run_pipeline_script(conn, {"Data_Type": "Plate", "IDs": [pid], "Workers": 1,
                                                 "Pipeline": pipeline, "Attach_To": "Plate, wells and images"})
            assert outcome.ok, outcome.message
        # another tool's file, on the plate, a well and an image
        notes = server.add_file_annotation(b"hand-written notes", "notes.txt", ns="lab.example/notes")
        for kind, oid in (("Plate", pid), ("Well", members["Well"][0]), ("Image", members["Image"][0])):
            link_annotation(conn, kind, oid, "FileAnnotation", notes)
        # another tool's bulk-annotation table on the plate
        table = server.add_file_annotation(b"not really hdf5", "other.h5", mimetype="OMERO.tables", ns=BULK_NS)
        store.get("FileAnnotation", table).setDescription(rstring("made by another tool"))
        link_annotation(conn, "Plate", pid, "FileAnnotation", table)
        # key-value pairs of another namespace on a well, saved by the client
        kv = omero.model.MapAnnotationI()
        kv.setNs(rstring("lab.example/kv"))
        kv.setMapValue([omero.model.NamedValue("treatment", "DMSO")])
        kv_id = conn.getUpdateService().saveAndReturnObject(kv).getId().getValue()
        link_annotation(conn, "Well", members["Well"][1], "MapAnnotation", kv_id)

    ours, foreign = {}, {}
    for kind, ids in members.items():
        for oid in ids:
            for ann in store.annotations_on(kind, oid):
                is_ours = ns_of(ann).startswith(NS_PREFIX) or (
                    ns_of(ann) == BULK_NS and ann.getId().getValue() != table)
                (ours if is_ours else foreign).setdefault((kind, oid), []).append(ann.getId().getValue())
    ours_files = {a.getFile().getId().getValue() for ids in ours.values() for i in ids
                  if (a := store.get("FileAnnotation", i)) is not None}
    return SimpleNamespace(ours=ours, foreign=foreign, ours_files=ours_files, notes=notes, table=table,
                           kv=kv_id, members=members)


@pytest.fixture(scope="module")
def deleted(server, annotated):
    from openhcs_omero_lib.testing.processor import run_script

    return run_script(server, DELETE_SCRIPT, _selection(server.plate_id))


def test_there_was_something_to_delete(server, annotated):
    store = server.store
    assert {kind for kind, _ in annotated.ours} == {"Plate", "Well", "Image"}
    namespaces = {ns_of(a) for a in store.all("FileAnnotation") + store.all("MapAnnotation")
                  if a.getId().getValue() in {i for ids in annotated.ours.values() for i in ids}}
    assert namespaces == {NS_PREFIX + "nuclei_count", NS_PREFIX + "nuclear_translocation", BULK_NS}
    plate_tables = [i for i in annotated.ours[("Plate", server.plate_id)]
                    if ns_of(store.get("FileAnnotation", i)) == BULK_NS]
    assert plate_tables and all(store.get("FileAnnotation", i).getFile().getId().getValue()
                                          in store.tables for i in plate_tables)
    assert {kind for kind, _ in annotated.foreign} == {"Plate", "Well", "Image"}


def test_delete_removes_every_openhcs_annotation(server, annotated, deleted):
    assert deleted.errors == [] and deleted.returncode == 0, deleted.stderr[-2000:]
    assert "Traceback" not in deleted.stderr
    store = server.store
    for kind, ids in annotated.members.items():
        for oid in ids:
            left = [ns_of(a) for a in store.annotations_on(kind, oid)]
            assert not [ns for ns in left if ns.startswith(NS_PREFIX)], (kind, oid, left)
    for ids in annotated.ours.values():
        for aid in ids:
            assert store.get("FileAnnotation", aid) is None and store.get("MapAnnotation", aid) is None
    for fid in annotated.ours_files:  # files and tables go with their annotations
        assert store.get("OriginalFile", fid) is None
        assert fid not in store.files and fid not in store.tables
    # no result annotation of any pipeline is left anywhere, linked or not
    for kind in ("FileAnnotation", "MapAnnotation"):
        assert not [a for a in store.all(kind) if ns_of(a).startswith(NS_PREFIX)]
    n_ours = len({aid for ids in annotated.ours.values() for aid in ids})
    assert f"removed {n_ours} " in deleted.output("Message")


def test_delete_leaves_other_annotations_alone(server, annotated, deleted):
    assert deleted.returncode == 0
    store = server.store
    for (kind, oid), ids in annotated.foreign.items():
        now = [a.getId().getValue() for a in store.annotations_on(kind, oid)]
        assert now == ids, (kind, oid)
    assert store.file_text(store.get("FileAnnotation", annotated.notes).getFile().getId().getValue()) == \
        "hand-written notes"
    assert store.get("FileAnnotation", annotated.table) is not None
    assert store.get("MapAnnotation", annotated.kv) is not None


def test_nothing_left_to_delete_the_second_time(server, deleted):
    from openhcs_omero_lib.omero.script_support import delete_results_script

    assert deleted.returncode == 0
    with gateway(server) as conn:
        outcome = delete_results_script(conn, {"Data_Type": "Plate", "IDs": [server.plate_id]})
    assert outcome.ok and "removed 0 " in outcome.message
