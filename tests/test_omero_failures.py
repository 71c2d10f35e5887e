"""A server error at any step of attaching results leaves nothing behind.

The result writer saves new results first and removes what it saved when a later
step fails. Each case makes one server call fail (``OmeroStandIn.fail``) during a
first run on a plate and checks that the run says nothing was attached and that no
file, annotation, link or table of it remains.
"""

from __future__ import annotations

import collections

import pytest

from omero_fixtures import NS, calls_since, created_since, csv_rows, file_name, snapshot, standin


@pytest.fixture(scope="module")
def server(tiny_plate):
    with standin() as server:
        server.plate_id = server.import_plate(tiny_plate)
        yield server


def _run(server, conn, plate_id, **params):
    from openhcs_omero_lib.omero.script_support import run_pipeline_script

    params = {"Data_Type": "Plate", "IDs": [plate_id], "Workers": 1, "Attach_To": "Plate, wells and images",
              **params}
    before, calls = snapshot(server.store), collections.Counter(server.calls)
    outcome = run_pipeline_script(conn, params)
    return outcome, calls_since(server, calls), created_since(before, snapshot(server.store))



@pytest.mark.parametrize("key, after", [
    pytest.param("IUpdate.saveAndReturnArray", 0, id="plate-files-saved"),
    pytest.param("IUpdate.saveAndReturnArray", 1, id="plate-file-annotations"),
    pytest.param("IUpdate.saveArray", 0, id="links"),  # every link in one call
    pytest.param("SharedResources.newTable", 0, id="new-table"),
    pytest.param("IUpdate.saveAndReturnArray", 3, id="well-files"),
    pytest.param("IUpdate.saveAndReturnArray", 6, id="image-files"),
    pytest.param("RawFileStore.write", 0, id="plate-file-content"),
    pytest.param("RawFileStore.save", 3, id="well-file-content"),
    pytest.param("Table.addData", 0, id="table-data"),
])
def test_failure_while_attaching_leaves_nothing(server, conn, key, after):
    import omero

    server.fail(key, omero.InternalException(message="injected"), after=after)
    try:
        outcome, calls, created = _run(server, conn, server.plate_id)
    finally:
        server.clear_failures()
    assert calls[key] > after, f"{key} was called {calls[key]} times: the failure was not reached"
    assert not outcome.ok
    assert outcome.message.startswith("Nothing attached") and "injected" in outcome.message, outcome.message
    for stateful in ("RawFileStore", "Table", "Handle", "RawPixelsStore"):
        assert server.open_stateful[stateful] == 0, stateful
    assert created == {}, f"left behind: {created}"


def test_replacing_another_users_results_reports_what_happened(server, conn, tiny_plate):
    """In a read-annotate group bob ran the pipeline on alice's plate; alice runs it again."""
    from omero_fixtures import gateway as login

    pid = server.import_plate(tiny_plate, name="shared")
    server.add_user("bob", "bob-password", [server.group])
    with login(server, "bob", "bob-password") as bob:
        first, _, bobs = _run(server, bob, pid)
    assert first.ok and bobs
    outcome, _, created = _run(server, conn, pid)
    # alice's run attaches, leaves bob's results (she may not delete them) and says so
    assert outcome.ok and created.get("FileAnnotation"), outcome.message
    assert "other users' results of this pipeline stay" in outcome.message and "of bob)" in outcome.message
    assert "could not remove" not in outcome.message
    assert all(server.store.get("FileAnnotation", a) is not None for a in bobs["FileAnnotation"])


def _run_with_one_unreadable_plane(server, conn):
    import omero

    server.fail("RawPixelsStore.getPlane", omero.InternalException(message="injected pixels"), after=1, times=1)
    try:
        # through RawPixelsStore: a plane read from its file would not meet the failure
        outcome, calls, created = _run(server, conn, server.plate_id, Attach_To="Plate", Pixel_Access="server")
    finally:
        server.clear_failures()
    anns = server.store.annotations_on("Plate", server.plate_id, NS)
    images = next(a for a in anns if file_name(server.store, a).endswith("_images.csv"))
    return outcome, created, anns, csv_rows(server.store, images)


def test_a_failing_field_does_not_stop_the_run(server, conn):
    """A plane that cannot be read is an error row; the other fields are attached."""
    outcome, created, anns, rows = _run_with_one_unreadable_plane(server, conn)
    assert outcome.ok, outcome.message
    assert "1 field(s) failed" in outcome.message
    assert {a.getId().getValue() for a in anns} <= set(created["FileAnnotation"])
    failed = [r for r in rows if r["error"]]
    assert len(failed) == 1 and "InternalException" in failed[0]["error"]
    assert failed[0]["nuclei_count"] == ""
    assert all(int(r["nuclei_count"]) > 0 for r in rows if not r["error"])


def test_a_failing_field_records_the_servers_reason(server, conn):
    outcome, created, anns, rows = _run_with_one_unreadable_plane(server, conn)
    failed = [r["error"] for r in rows if r["error"]]
    assert len(failed) == 1
    assert "injected pixels" in failed[0]
