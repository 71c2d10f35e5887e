"""The pictures of a run in OMERO: Run_HCS_Pipeline attaches the plate's heat map
(``image/png``, the results' namespace) and, with ``Save_ROIs``, the measured objects
as ROIs on each field's image, read back as a client reads them (``IRoi.findByImage``):
once per run and plate, replaced by a re-run, in batches whose calls are counted."""

from __future__ import annotations

import io
import json
import math
from types import SimpleNamespace

import pandas as pd
import pytest
from PIL import Image

from omero_fixtures import (
    NS,
    RUN_SCRIPT,
    created_since,
    csv_rows,
    file_name,
    gateway,
    mimetype,
    plate_members,
    snapshot,
    standin,
)

HEATMAP = "nuclei_count_heatmap.png"


def _run(server, plate_id, **extra):
    from omero.rtypes import rbool, rint, rlist, rlong, rstring

    from openhcs_omero_lib.testing.processor import run_script

    inputs = {"Data_Type": rstring("Plate"), "IDs": rlist([rlong(plate_id)]), "Workers": rint(2),
              "Attach_To": rstring("Plate and wells")}
    for key, value in extra.items():
        inputs[key] = rbool(value) if isinstance(value, bool) else rint(value) if isinstance(value, int) \
            else rstring(value)
    run = run_script(server, RUN_SCRIPT, inputs)
    assert run.errors == [] and run.returncode == 0, (run.errors, run.stderr[-3000:])
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    return run


def client_rois(server, image_ids) -> dict[int, list]:
    """Each image's ROIs as a client reads them (IRoi.findByImage), across groups."""
    with gateway(server) as conn:
        opts = conn.SERVICE_OPTS.copy()
        opts.setOmeroGroup(-1)
        service = conn.getRoiService()
        return {iid: list(service.findByImage(iid, None, opts).rois) for iid in image_ids}


def _plate_state(server, pid):
    store = server.store
    anns = store.annotations_on("Plate", pid, NS)
    images = plate_members(store, pid)["Image"]
    heatmaps = [SimpleNamespace(id=a.getId().getValue(), ns=a.getNs().getValue(), mimetype=mimetype(store, a),
                                png=bytes(store.files[a.getFile().getId().getValue()]))
                for a in anns if file_name(store, a) == HEATMAP]
    files = {file_name(store, a): pd.DataFrame(csv_rows(store, a)) for a in anns
             if file_name(store, a).endswith(".csv")}
    return SimpleNamespace(heatmaps=heatmaps, files=files, rois=client_rois(server, images), images=images)


@pytest.fixture(scope="module")
def runs(small_plate):
    """Save_ROIs, the same again, then without ROIs; the plate's state after each."""
    with standin() as server:
        pid = server.import_plate(small_plate.folder)
        out = SimpleNamespace(server=server, pid=pid, runs=[], states=[], snaps=[])
        for extra in ({"Save_ROIs": True}, {"Save_ROIs": True}, {}):
            out.runs.append(_run(server, pid, **extra))
            out.states.append(_plate_state(server, pid))
            out.snaps.append(snapshot(server.store))
        out.store_rois = len(server.store.all("Roi")), len(server.store.all("Polygon"))
        yield out


def test_the_heat_map_is_attached_to_the_plate_once_per_run(runs):
    ids = []
    for state in runs.states:
        assert len(state.heatmaps) == 1
        heatmap = state.heatmaps[0]
        assert heatmap.mimetype == "image/png" and heatmap.ns == NS
        image = Image.open(io.BytesIO(heatmap.png))
        assert image.format == "PNG" and 600 <= image.size[0] <= 1300
        ids.append(heatmap.id)
    assert len(set(ids)) == 3  # each run's own, the earlier one removed


def test_the_heat_map_is_the_one_of_the_attached_wells(runs, small_plate):
    from openhcs_omero_lib.pictures.heatmap import plate_heatmap
    from openhcs_omero_lib.plates.imagexpress import ImageXpressSource

    store = runs.server.store
    state = runs.states[-1]
    wells = state.files["nuclei_count_wells.csv"]
    for c in ("column", "timepoint", "sites", "sites_failed", "nuclei_count"):
        wells[c] = wells[c].astype(int)
    with ImageXpressSource(small_plate.folder) as source:
        layout = source.layout
    plate = store.get("Plate", runs.pid).getName().getValue()
    expected = plate_heatmap(wells, layout.rows, layout.columns, plate=plate, pipeline="nuclei_count")
    assert state.heatmaps[0].png == expected.png


def test_rois_equal_the_measured_counts_on_every_image(runs):
    store = runs.server.store
    state = runs.states[0]
    images = state.files["nuclei_count_images.csv"]
    counts = dict(zip(images["image_id"].astype(int), images["nuclei_count"].astype(int)))
    assert sorted(counts) == sorted(state.images)
    plate_group = store.group_of(store.get("Plate", runs.pid))
    for iid, rois in state.rois.items():
        assert len(rois) == counts[iid] > 0, iid
        names = sorted(int(r.getName().getValue().split()[1]) for r in rois)
        assert names == list(range(1, counts[iid] + 1))  # one ROI per counted object
        for roi in rois:
            assert roi.getDescription().getValue() == NS
            assert roi.getDetails().getGroup().getId().getValue() == plate_group
            shapes = roi.copyShapes()
            assert len(shapes) >= 1 and all(type(s).__name__ == "PolygonI" for s in shapes)
            for s in shapes:
                assert s.getTheT().getValue() == 0 and s.getTheZ().getValue() == 0 and s.getTheC() is None
                assert len(s.getPoints().getValue().split()) >= 3
    message = runs.runs[0].output("Message")
    assert f"{sum(counts.values())} ROIs on {len(counts)} images" in message, message


def test_a_rerun_replaces_the_rois_and_a_run_without_removes_them(runs):
    first, second, third = runs.states
    assert {i: len(r) for i, r in first.rois.items()} == {i: len(r) for i, r in second.rois.items()}
    old = {r.getId().getValue() for rois in first.rois.values() for r in rois}
    new = {r.getId().getValue() for rois in second.rois.values() for r in rois}
    assert old and old.isdisjoint(new)
    assert all(rois == [] for rois in third.rois.values())  # replaced with the other results
    assert runs.store_rois == (0, 0)  # no ROI or shape of any run is left in the store
    assert "Roi" not in (runs.runs[0].output("Attached_IDs") or {})


def test_roi_saving_costs_a_bounded_number_of_calls(tiny_plate, monkeypatch):
    """Against the same run without ROIs, ROIs cost exactly one IUpdate.saveAndReturnIds
    per batch, nothing per image or per object."""
    from openhcs_omero_lib.omero import rois as R
    from openhcs_omero_lib.omero.script_support import run_pipeline_script

    monkeypatch.setattr(R, "BATCH", 7)
    with standin() as server:
        pid = server.import_plate(tiny_plate)
        params = {"IDs": [pid], "Workers": 1, "Attach_To": "Plate and wells"}
        with gateway(server) as conn:
            assert run_pipeline_script(conn, params).ok
            server.reset_counts()
            assert run_pipeline_script(conn, params).ok
            without = dict(server.calls)
            server.reset_counts()
            outcome = run_pipeline_script(conn, {**params, "Save_ROIs": True})
            assert outcome.ok, outcome.message
            with_rois = dict(server.calls)
        images = plate_members(server.store, pid)["Image"]
        total = sum(len(r) for r in client_rois(server, images).values())
    assert total > 7 * 2
    extra = {k: with_rois.get(k, 0) - without.get(k, 0) for k in set(with_rois) | set(without)}
    assert {k: v for k, v in extra.items() if v} == {"IUpdate.saveAndReturnIds": math.ceil(total / 7)}
    # with the real batch size, fewer save calls than images
    assert math.ceil(total / R.DEFAULT_CAP) <= math.ceil(total / 500) <= len(images)


def test_the_cap_per_image_is_kept_and_said(tiny_plate):
    from openhcs_omero_lib.omero.script_support import run_pipeline_script

    cap = 4
    with standin() as server:
        pid = server.import_plate(tiny_plate)
        with gateway(server) as conn:
            outcome = run_pipeline_script(conn, {"IDs": [pid], "Workers": 1, "Attach_To": "Plate",
                                                 "Save_ROIs": True, "Max_ROIs_Per_Image": cap})
        assert outcome.ok, outcome.message
        store = server.store
        plate = {file_name(store, a): a for a in store.annotations_on("Plate", pid, NS)}
        summary = json.loads(store.file_text(plate["nuclei_count_results.json"].getFile().getId().getValue()))
        images_csv = pd.DataFrame(csv_rows(store, plate["nuclei_count_images.csv"]))
        counts = {int(r["image_id"]): int(r["nuclei_count"]) for _, r in images_csv.iterrows()}
        over = {(r["well"], int(r["site"])): int(r["nuclei_count"]) for _, r in images_csv.iterrows()
                if int(r["nuclei_count"]) > cap}
        assert over and len(over) < len(counts)  # the plate has both kinds of field
        rois = client_rois(server, list(counts))
        assert {iid: len(r) for iid, r in rois.items()} == {iid: min(n, cap) for iid, n in counts.items()}
        for iid, found in rois.items():  # the first objects, in label order
            numbers = sorted(int(r.getName().getValue().split()[1]) for r in found)
            assert numbers == list(range(1, min(counts[iid], cap) + 1))
        assert f"ROI cap of {cap} per image reached on {len(over)} image(s)" in outcome.message
        assert f"only the first {cap} objects of each were saved" in outcome.message
        capped = {(c["well"], c["field"]): (c["objects"], c["saved"]) for c in summary["rois"]["capped"]}
        assert capped == {key: (n, cap) for key, n in over.items()}
        assert summary["rois"]["cap_per_image"] == cap
        assert summary["rois"]["rois"] == sum(min(n, cap) for n in counts.values())


def test_a_failing_roi_batch_attaches_nothing_and_keeps_the_earlier_results(tiny_plate, monkeypatch):
    import omero

    from openhcs_omero_lib.omero import rois as R
    from openhcs_omero_lib.omero.script_support import run_pipeline_script

    monkeypatch.setattr(R, "BATCH", 5)
    with standin() as server:
        pid = server.import_plate(tiny_plate)
        params = {"IDs": [pid], "Workers": 1, "Attach_To": "Plate", "Save_ROIs": True}
        with gateway(server) as conn:
            assert run_pipeline_script(conn, params).ok
            before = snapshot(server.store)
            rois_before = {r.getId().getValue() for r in server.store.all("Roi")}
            server.fail("IUpdate.saveAndReturnIds", omero.SecurityViolation(message="injected"), after=2, times=1)
            failed = run_pipeline_script(conn, params)
        assert not failed.ok and "injected" in failed.message
        assert created_since(before, snapshot(server.store)) == {}
        assert {r.getId().getValue() for r in server.store.all("Roi")} == rois_before  # the first run's, whole
        assert len(server.store.all("Polygon")) >= len(rois_before) > 10


def test_rois_go_to_the_plates_group_and_need_annotate_rights(tiny_plate):
    """A plate of another of the user's groups gets its ROIs there; someone else's
    plate in a read-only group is refused before anything runs (the stand-in's own
    refusal of such a ROI is in test_omero_rois)."""
    from openhcs_omero_lib.omero.script_support import run_pipeline_script

    with standin() as server:
        other = server.add_group("screening", "rwra--")
        server.user.groups.append(other.id)
        pid = server.import_plate(tiny_plate, group=other)
        bob = server.add_user("bob", "bob-password", [server.add_group("read-only", "rwr---")])
        read_only = server.store.groups[bob.default_group]
        server.user.groups.append(read_only.id)
        theirs = server.import_plate(tiny_plate, owner=bob, group=read_only)
        with gateway(server) as conn:
            ok = run_pipeline_script(conn, {"IDs": [pid], "Workers": 1, "Attach_To": "Plate", "Save_ROIs": True})
            refused = run_pipeline_script(conn, {"IDs": [theirs], "Workers": 1, "Attach_To": "Plate",
                                                 "Save_ROIs": True, "Heat_Map": False, "CSV": False,
                                                 "OMERO_Table": False, "Key_Value_Pairs": False})
        assert ok.ok, ok.message
        groups = {server.store.group_of(r) for r in server.store.all("Roi")}
        assert groups == {other.id}
        assert not refused.ok and "no permission to annotate" in refused.message, refused.message
        assert not any(r.getImage().getId().getValue() in plate_members(server.store, theirs)["Image"]
                       for r in server.store.all("Roi"))


def test_bad_picture_choices_stop_before_anything_runs(tiny_plate):
    from openhcs_omero_lib.omero.script_support import run_pipeline_script

    with standin() as server:
        pid = server.import_plate(tiny_plate)
        with gateway(server) as conn:
            bad = run_pipeline_script(conn, {"IDs": [pid], "Heat_Map_Measurement": "nuclei_size"})
            cap = run_pipeline_script(conn, {"IDs": [pid], "Save_ROIs": True, "Max_ROIs_Per_Image": 0})
            no_map = run_pipeline_script(conn, {"IDs": [pid], "Workers": 1, "Attach_To": "Plate",
                                                "Heat_Map": False, "Heat_Map_Measurement": "nuclei_size"})
        assert not bad.ok and bad.message.startswith("Nothing attached: Heat_Map_Measurement:"), bad.message
        assert "nuclei_count" in bad.message
        assert not cap.ok and "Max_ROIs_Per_Image" in cap.message
        assert server.calls["RawPixelsStore.getPlane"] > 0 and no_map.ok  # only the third one ran
        names = [file_name(server.store, a) for a in server.store.annotations_on("Plate", pid, NS)]
        assert HEATMAP not in names and "nuclei_count_wells.csv" in names


def test_delete_hcs_results_removes_the_rois_too(tiny_plate):
    from openhcs_omero_lib.omero.script_support import delete_results_script, run_pipeline_script

    with standin() as server:
        pid = server.import_plate(tiny_plate)
        with gateway(server) as conn:
            assert run_pipeline_script(conn, {"IDs": [pid], "Workers": 1, "Save_ROIs": True}).ok
            n = len(server.store.all("Roi"))
            outcome = delete_results_script(conn, {"Data_Type": "Plate", "IDs": [pid]})
        assert outcome.ok and f"and {n} ROIs" in outcome.message, outcome.message
        assert server.store.all("Roi") == [] and server.store.all("Polygon") == []


def test_a_plate_larger_than_1536_wells_gets_its_results_without_a_heat_map(tiny_plate):
    from omero.rtypes import rint

    from openhcs_omero_lib.omero.script_support import run_pipeline_script

    with standin() as server:
        pid = server.import_plate(tiny_plate)
        plate = server.store.get("Plate", pid)
        plate.setRows(rint(40))  # more rows than a heat map draws
        server.store.touch(plate)
        with gateway(server) as conn:
            outcome = run_pipeline_script(conn, {"IDs": [pid], "Workers": 1, "Attach_To": "Plate"})
        assert outcome.ok and "no heat map of a plate of 40x" in outcome.message, outcome.message
        names = sorted(file_name(server.store, a) for a in server.store.annotations_on("Plate", pid, NS))
        assert "nuclei_count_heatmap.png" not in names
        assert {"nuclei_count_images.csv", "nuclei_count_results.json", "nuclei_count_wells.csv"} <= set(names)


def test_a_rerun_leaves_a_colleagues_rois(tiny_plate):
    """As with the other results, a re-run (and Delete_HCS_Results) removes only the
    user's own ROIs: in a read-annotate group the server would refuse the rest."""
    from openhcs_omero_lib.omero.script_support import delete_results_script, run_pipeline_script

    with standin() as server:
        pid = server.import_plate(tiny_plate)
        bob = server.add_user("bob", "bob-password", [server.group])
        params = {"IDs": [pid], "Workers": 1, "Attach_To": "Plate", "Save_ROIs": True}
        with gateway(server, "bob", "bob-password") as conn:
            assert run_pipeline_script(conn, params).ok
        bobs = {r.getId().getValue() for r in server.store.all("Roi")}
        assert bobs and {server.store.owner_of(r) for r in server.store.all("Roi")} == {bob.id}
        with gateway(server) as conn:
            first = run_pipeline_script(conn, params)
            second = run_pipeline_script(conn, params)
            deleted = delete_results_script(conn, {"Data_Type": "Plate", "IDs": [pid]})
        assert first.ok and second.ok, (first.message, second.message)
        assert "bob" in second.message, second.message
        assert {r.getId().getValue() for r in server.store.all("Roi")} == bobs  # alice's went, bob's stay
        assert deleted.ok and "left other users' (" in deleted.message and "bob" in deleted.message
