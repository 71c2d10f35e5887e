"""Running Run_HCS_Pipeline.py again replaces its results; a run that fails while
attaching leaves the earlier results as they were and nothing of its own."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from omero_fixtures import (
    BULK_NS,
    NS,
    RUN_SCRIPT,
    annotation_state,
    created_since,
    file_name,
    plate_members,
    snapshot,
    standin,
)


def _run(server, plate_id):
    from omero.rtypes import rint, rlist, rlong, rstring

    from openhcs_omero_lib.testing.processor import run_script

    return run_script(server, RUN_SCRIPT, {
        "Data_Type": rstring("Plate"), "IDs": rlist([rlong(plate_id)]), "Workers": rint(1),
        "Attach_To": rstring("Plate and wells")})


@pytest.fixture(scope="module")
def runs(small_plate):
    """Run, run again, then run with the save of its links failing; the store's state
    after each."""
    import omero

    with standin() as server:
        pid = server.import_plate(small_plate.folder)
        out = SimpleNamespace(server=server, pid=pid, runs=[], states=[], snaps=[])

        def record(run):
            out.runs.append(run)
            out.states.append(annotation_state(server.store, pid))
            out.snaps.append(snapshot(server.store))

        record(_run(server, pid))
        record(_run(server, pid))
        server.fail("IUpdate.saveArray", omero.SecurityViolation(message="injected"), after=0)  # the links
        try:
            record(_run(server, pid))
        finally:
            server.clear_failures()
        out.open_stateful = dict(server.open_stateful)
        yield out


def _n_annotations(state) -> int:
    return len({a for anns in state.values() for a in anns})


def test_both_runs_attach(runs):
    for run in runs.runs[:2]:
        assert run.errors == [] and run.returncode == 0, run.stderr[-2000:]
        assert not run.output("Message").startswith("Nothing attached"), run.output("Message")
    first = runs.states[0]
    assert any(first[("Well", wid)] for wid in plate_members(runs.server.store, runs.pid)["Well"])
    assert all(anns == [] for (kind, _), anns in first.items() if kind == "Image")


def test_second_run_leaves_exactly_one_set(runs):
    first, second = runs.states[0], runs.states[1]
    assert first.keys() == second.keys()
    assert {k: len(v) for k, v in second.items()} == {k: len(v) for k, v in first.items()}
    old = {a for anns in first.values() for a in anns}
    new = {a for anns in second.values() for a in anns}
    assert old.isdisjoint(new)  # every earlier annotation was replaced
    store = runs.server.store
    for (kind, oid), anns in second.items():
        assert len(anns) == len(set(anns)), (kind, oid)
        names = [file_name(store, a) for a in store.annotations_on(kind, oid)
                 if type(a).__name__ == "FileAnnotationI"]
        assert len(names) == len(set(names)), (kind, oid, names)
    assert len(store.annotations_on("Plate", runs.pid, BULK_NS)) == 1
    # nothing of the first run is left anywhere: same number of objects of every kind
    assert {k: len(v) for k, v in runs.snaps[1].items()} == {k: len(v) for k, v in runs.snaps[0].items()}
    # ... and the first run's result objects are gone, not merely outnumbered
    for kind in ("FileAnnotation", "MapAnnotation", "WellAnnotationLink", "PlateAnnotationLink", "tables"):
        assert runs.snaps[1][kind].isdisjoint(runs.snaps[0][kind]), kind
    assert f"replaced {_n_annotations(first)}" in runs.runs[1].output("Message")


def test_a_run_failing_midway_keeps_the_earlier_results(runs):
    failed = runs.runs[2]
    assert failed.errors == [] and failed.returncode == 0, failed.stderr[-2000:]
    message = failed.output("Message")
    assert message.startswith("Nothing attached"), message
    assert "injected" in message
    assert failed.output("File_Annotation") is None
    assert runs.states[2] == runs.states[1]  # the same annotations, by ID, on every object
    assert created_since(runs.snaps[1], runs.snaps[2]) == {}  # no half set left behind
    assert runs.snaps[2] == runs.snaps[1]
    for stateful in ("RawFileStore", "RawPixelsStore", "Table", "Handle"):
        assert runs.open_stateful.get(stateful, 0) == 0, stateful


def test_the_results_namespace_is_the_pipelines(runs):
    store = runs.server.store
    plate = store.annotations_on("Plate", runs.pid)
    assert {a.getNs().getValue() for a in plate} == {NS, BULK_NS}


def test_another_pipeline_leaves_the_first_pipelines_results(tiny_plate):
    from omero_fixtures import gateway
    from openhcs_omero_lib.omero.script_support import run_pipeline_script

    with standin() as server:
        pid = server.import_plate(tiny_plate)
        with gateway(server) as conn:
            first = run_pipeline_script(conn, {"IDs": [pid], "Workers": 1, "Attach_To": "Plate",
                                               "Pipeline": "nuclei_count"})
            assert first.ok, first.message
            before = annotation_state(server.store, pid)[("Plate", pid)]
            second = run_pipeline_script(conn, {"IDs": [pid], "Workers": 1, "Attach_To": "Plate",
                                                "Pipeline": "nuclear_translocation"})
            assert second.ok, second.message
        after = annotation_state(server.store, pid)[("Plate", pid)]
        assert set(before) <= set(after), f"annotations of the first pipeline removed: {set(before) - set(after)}"
        assert len(server.store.annotations_on("Plate", pid, BULK_NS)) == 2
