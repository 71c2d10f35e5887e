"""Several users, several kinds of group: a run touches only what its user may and owns.

OMERO's groups are private (``rw----``), read-only (``rwr---``), read-annotate
(``rwra--``) or read-write (``rwrw--``). A re-run replaces only the results its user
attached: a colleague's results of the same pipeline stay (in a read-write group the
server would let them be deleted; in a read-annotate group it refuses), and the
message says they are there. What cannot be saved is found out before anything
computes: a plate the user may not annotate, a table without OMERO.tables.
"""

from __future__ import annotations

import collections
import itertools

import pytest

from omero_fixtures import NS, calls_since, created_since, gateway, snapshot, standin

_names = itertools.count(1)


@pytest.fixture(scope="module")
def server():
    with standin() as server:
        yield server


def _group(server, permissions: str):
    """A new group of ``permissions`` with alice and a new colleague in it; returns
    (group, colleague's name, colleague's password)."""
    n = next(_names)
    group = server.add_group(f"group{n}-{permissions}", permissions)
    server.user.groups.append(group.id)
    name = f"bob{n}"
    server.add_user(name, f"{name}-password", [group])
    return group, name, f"{name}-password"


def _run(server, conn, plate_id, **params):
    from openhcs_omero_lib.omero.script_support import run_pipeline_script

    params = {"Data_Type": "Plate", "IDs": [plate_id], "Workers": 1, "Attach_To": "Plate, wells and images",
              **params}
    before, calls = snapshot(server.store), collections.Counter(server.calls)
    outcome = run_pipeline_script(conn, params)
    return outcome, calls_since(server, calls), created_since(before, snapshot(server.store))


def _ours(server, plate_id) -> dict[int, set[int]]:
    """Owner ID -> IDs of the nuclei_count annotations (and tables) on the plate, its
    wells and images, read from the store."""
    from omero_fixtures import BULK_NS, ns_of, plate_members

    store = server.store
    found: dict[int, set[int]] = {}
    for kind, ids in plate_members(store, plate_id).items():
        for oid in ids:
            for ann in store.annotations_on(kind, oid):
                if ns_of(ann) in (NS, BULK_NS):
                    found.setdefault(store.owner_of(ann), set()).add(ann.getId().getValue())
    return found


# ---- the stand-in answers as the server does -------------------------------------------------

# What a member who does not own a plate may do with it, by group (OMERO's "Groups and
# permissions system"; omero-server BasicACLVoter): (sees it, annotate, delete, edit, link).
MEMBER_RIGHTS = {
    "rw----": (False, False, False, False, False),
    "rwr---": (True, False, False, False, False),
    "rwra--": (True, True, False, False, False),
    "rwrw--": (True, True, True, True, True),
}


@pytest.mark.parametrize("permissions", sorted(MEMBER_RIGHTS))
def test_objects_come_with_the_callers_restrictions(server, tiny_plate, permissions):
    """Through BlitzGateway, as OMERO.web asks: ``canAnnotate()`` and its siblings read
    the restrictions the server computes for the caller."""
    group, bob, password = _group(server, permissions)
    pid = server.import_plate(tiny_plate, name="theirs", group=group)
    with gateway(server, bob, password) as conn:
        conn.SERVICE_OPTS.setOmeroGroup(-1)
        plate = conn.getObject("Plate", pid)
        seen = plate is not None
        rights = (seen,) + ((plate.canAnnotate(), plate.canDelete(), plate.canEdit(), plate.canLink())
                            if seen else (False,) * 4)
    assert rights == MEMBER_RIGHTS[permissions]
    with gateway(server) as conn:  # the owner may do everything
        conn.SERVICE_OPTS.setOmeroGroup(-1)
        plate = conn.getObject("Plate", pid)
        assert (plate.canAnnotate(), plate.canDelete(), plate.canEdit(), plate.canLink()) == (True,) * 4


def test_a_private_groups_plate_is_invisible_to_other_members(server, tiny_plate):
    group, bob, password = _group(server, "rw----")
    pid = server.import_plate(tiny_plate, name="private", group=group)
    with gateway(server, bob, password) as conn:
        outcome, calls, created = _run(server, conn, pid)
    assert not outcome.ok
    assert outcome.message == f"Nothing attached: no Plate with ID {pid} (or you may not read it)"
    assert calls["RawPixelsStore.getPlane"] == 0 and created == {}


def test_without_tables_newtable_fails_and_leaves_its_file(server):
    """omero-blitz SharedResourcesI.newTable saves the file before it looks for the
    Tables service; without one the call fails and the file stays."""
    import omero

    server.tables_enabled = False
    try:
        with gateway(server) as conn:
            resources = conn.c.sf.sharedResources()
            assert resources.areTablesEnabled() is False
            before = snapshot(server.store)
            with pytest.raises(omero.InternalException):
                resources.newTable(1, "t.h5")
            assert list(created_since(before, snapshot(server.store))) == ["OriginalFile", "files"]
    finally:
        server.tables_enabled = True


# ---- checked before computing --------------------------------------------------------------

def test_a_plate_the_user_may_not_annotate_is_refused_before_computing(server, tiny_plate):
    """A read-only group: alice may read bob's plate but not annotate it."""
    group, bob, _ = _group(server, "rwr---")
    pid = server.import_plate(tiny_plate, name="read-only", owner=server.store.users[bob], group=group)
    with gateway(server) as conn:
        outcome, calls, created = _run(server, conn, pid)
    assert not outcome.ok
    assert outcome.message == (f"Nothing attached: plate {pid} (read-only): you have no permission to annotate it "
                               "(another user's plate in a read-only group), so its results could not be attached")
    assert calls["RawPixelsStore.getPlane"] == calls["ServiceFactory.createRawPixelsStore"] == 0
    assert created == {}


def test_a_table_without_omero_tables_is_refused_before_computing(server, tiny_plate):
    pid = server.import_plate(tiny_plate, name="no-tables")
    server.tables_enabled = False
    try:
        with gateway(server) as conn:
            outcome, calls, created = _run(server, conn, pid)
            assert not outcome.ok
            assert outcome.message.startswith("Nothing attached: OMERO.tables is not running on this server")
            assert calls["RawPixelsStore.getPlane"] == 0 and calls["SharedResources.newTable"] == 0
            assert created == {}
            # without the table the same run works
            outcome, calls, created = _run(server, conn, pid, OMERO_Table=False)
            assert outcome.ok, outcome.message
            assert created["FileAnnotation"] and not created.get("tables")
    finally:
        server.tables_enabled = True


def test_the_command_checks_before_computing_too(server, tiny_plate, monkeypatch, capsys):
    from openhcs_omero_lib.cli.app import main

    group, bob, _ = _group(server, "rwr---")
    theirs = server.import_plate(tiny_plate, name="cli-read-only", owner=server.store.users[bob], group=group)
    mine = server.import_plate(tiny_plate, name="cli-mine")
    monkeypatch.setenv("OMERO_USER", server.user.name)
    monkeypatch.setenv("OMERO_PASSWORD", server.password)
    for var in ("OMERO_SESSION_KEY", "OMERO_GROUP"):
        monkeypatch.delenv(var, raising=False)
    args = ["--no-progress", "--workers", "1", "--host", server.host, "--port", str(server.port),
            "--router", server.router]
    before = collections.Counter(server.calls)
    assert main(["run", "--omero-plate", str(mine), "--omero-plate", str(theirs), *args]) == 2
    assert f"plate {theirs} (cli-read-only): you have no permission to annotate it" in capsys.readouterr().err
    server.tables_enabled = False
    try:
        assert main(["run", "--omero-plate", str(mine), *args]) == 2
        assert "OMERO.tables is not running" in capsys.readouterr().err
        assert calls_since(server, before)["RawPixelsStore.getPlane"] == 0
        assert main(["run", "--omero-plate", str(mine), "--outputs", "csv", *args]) == 0
    finally:
        server.tables_enabled = True


# ---- re-runs replace only their user's results ---------------------------------------------------

@pytest.mark.parametrize("permissions", ["rwra--", "rwrw--"])
def test_a_rerun_keeps_a_colleagues_results(server, tiny_plate, permissions):
    """bob ran the pipeline on alice's plate; alice runs it twice. Her second run
    replaces her first, bob's results stay, and her message says they are there."""
    group, bob, password = _group(server, permissions)
    pid = server.import_plate(tiny_plate, name="shared", group=group)
    bob_id = server.store.users[bob].id
    with gateway(server) as alice:
        first, _, _ = _run(server, alice, pid)
        assert first.ok, first.message
        with gateway(server, bob, password) as conn:
            theirs, _, _ = _run(server, conn, pid)
        assert theirs.ok, theirs.message
        before = _ours(server, pid)
        assert before[bob_id] and before[server.user.id]
        assert "other users' results" not in first.message
        again, _, created = _run(server, alice, pid)
    assert again.ok, again.message
    after = _ours(server, pid)
    assert after[bob_id] == before[bob_id]  # every one of bob's results is still there
    assert not after[server.user.id] & before[server.user.id]  # alice's first set is gone
    assert after[server.user.id] == set(created["FileAnnotation"]) | set(created.get("MapAnnotation", []))
    assert f"replaced {len(before[server.user.id])}" in again.message
    assert f"other users' results of this pipeline stay ({len(before[bob_id])} of {bob})" in again.message
    assert "could not remove" not in again.message


def test_delete_results_removes_only_the_users_own(server, tiny_plate):
    """In a read-write group alice could delete bob's results; Delete_HCS_Results
    deletes hers and says whose it left."""
    from openhcs_omero_lib.omero.script_support import delete_results_script

    group, bob, password = _group(server, "rwrw--")
    pid = server.import_plate(tiny_plate, name="both", group=group)
    bob_id = server.store.users[bob].id
    with gateway(server) as alice, gateway(server, bob, password) as conn:
        assert _run(server, alice, pid)[0].ok and _run(server, conn, pid)[0].ok
        before = _ours(server, pid)
        outcome = delete_results_script(alice, {"Data_Type": "Plate", "IDs": [pid]})
        assert outcome.ok, outcome.message
        assert outcome.message == (f"removed {len(before[server.user.id])} openhcs-omero annotations; "
                                   f"left other users' ({len(before[bob_id])} of {bob})")
        assert _ours(server, pid) == {bob_id: before[bob_id]}
        outcome = delete_results_script(conn, {"Data_Type": "Plate", "IDs": [pid]})
        assert outcome.message == f"removed {len(before[bob_id])} openhcs-omero annotations"
    assert _ours(server, pid) == {}
