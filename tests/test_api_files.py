"""The OMERO file backend: save, load and list files on plates, wells and images,
through real omero-py over the stand-in, read back from the store (not the backend)."""

from __future__ import annotations

import collections
import itertools
import json

import pandas as pd
import pytest

from omero_fixtures import (
    calls_since,
    created_since,
    file_of,
    gateway,
    image_site,
    link_annotation,
    snapshot,
    standin,
    well_names,
)

NS = "openhcs.omero/files"
_names = itertools.count(1)


@pytest.fixture(scope="module")
def server(tiny_plate):
    with standin() as server:
        server.plate_id = server.import_plate(tiny_plate)
        yield server


@pytest.fixture(scope="module")
def files(conn):
    from openhcs_omero_lib.api import OMEROFileBackend

    return OMEROFileBackend(conn)


def _linked(store, kind: str, oid: int) -> dict[str, object]:
    """File name -> FileAnnotation of the files namespace on an object, from the store."""
    return {file_of(store, a).getName().getValue(): a for a in store.annotations_on(kind, oid, NS)}


def _well_id(server, name: str) -> int:
    return next(wid for wid, n in well_names(server.store, server.plate_id).items() if n == name)


def _image_id(server, well: str, site: int) -> int:
    store = server.store
    wid = _well_id(server, well)
    return next(iid for ws in store.children("WellSample", "well", wid)
                if image_site(store, iid := ws.getImage().getId().getValue()) == (well, site))


def _group(server, permissions: str):
    n = next(_names)
    group = server.add_group(f"files{n}-{permissions}", permissions)
    server.user.groups.append(group.id)
    name = f"carol{n}"
    server.add_user(name, f"{name}-password", [group])
    return group, name, f"{name}-password"


# ---- what is stored where -------------------------------------------------------------------------

def test_a_dict_is_json_on_the_plate(server, conn, files):
    store, pid = server.store, server.plate_id
    saved = files.save({"threshold": 0.5, "wells": ["A01", "A02"]}, "analysis_results.json", f"Plate:{pid}")
    ann = _linked(store, "Plate", pid)["analysis_results.json"]
    assert saved.file.annotation_id == ann.getId().getValue() and saved.replaced == 0 and saved.others == {}
    ofile = file_of(store, ann)
    assert ofile.getMimetype().getValue() == "application/json"
    assert json.loads(store.file_text(ofile.getId().getValue())) == {"threshold": 0.5, "wells": ["A01", "A02"]}
    assert store.group_of(ann) == store.group_of(store.get("Plate", pid))
    assert files.load("analysis_results.json", f"Plate:{pid}") == {"threshold": 0.5, "wells": ["A01", "A02"]}


def test_a_dataframe_is_csv_on_a_well_named_by_its_virtual_path(server, files):
    store = server.store
    frame = pd.DataFrame({"well": ["A01", "A01"], "site": [1, 2], "area": [12.5, 13.25]})
    saved = files.save(frame, f"/omero/plate_{server.plate_id}/A01/areas.csv")
    wid = _well_id(server, "A01")
    ann = _linked(store, "Well", wid)["areas.csv"]
    assert saved.file.target == f"well A01 of plate {server.plate_id} (Well:{wid})"
    assert file_of(store, ann).getMimetype().getValue() == "text/csv"
    assert store.file_text(file_of(store, ann).getId().getValue()) == frame.to_csv(index=False)
    pd.testing.assert_frame_equal(files.load("areas.csv", f"Well:{wid}"), frame)
    assert "areas.csv" not in _linked(store, "Plate", server.plate_id)


def test_bytes_go_as_given_on_a_fields_image(server, files):
    store = server.store
    data = bytes(range(256)) * 5000  # over one upload block
    saved = files.save(data, "overlay.png", f"/omero/plate_{server.plate_id}/A02_s002")
    iid = _image_id(server, "A02", 2)
    ann = _linked(store, "Image", iid)["overlay.png"]
    assert saved.file.mimetype == file_of(store, ann).getMimetype().getValue() == "image/png"
    assert bytes(store.files[file_of(store, ann).getId().getValue()]) == data
    assert files.load(f"/omero/plate_{server.plate_id}/A02_s002/overlay.png") == data
    files.save(b"\x00\x01", "raw.bin", f"Image:{iid}", mimetype="application/x-mine")
    assert files.load("raw.bin", f"Image:{iid}", raw=True) == b"\x00\x01"
    assert file_of(store, _linked(store, "Image", iid)["raw.bin"]).getMimetype().getValue() == "application/x-mine"


def test_list_shows_every_file_of_the_namespace_on_the_target(server, conn, files):
    from openhcs_omero_lib.api import OMEROFileBackend

    wid = _well_id(server, "A02")
    for name in ("b.json", "a.json"):
        files.save([1, 2, 3], name, f"Well:{wid}")
    OMEROFileBackend(conn, namespace="my.lab/notes").save("a note", "note.txt", f"Well:{wid}")
    _key_values_in_the_namespace(conn, wid)  # not a file: not listed
    listed = files.list(f"/omero/plate_{server.plate_id}/A02")
    assert [(f.name, f.mimetype, f.size, f.mine) for f in listed] == [
        ("a.json", "application/json", len(json.dumps([1, 2, 3], indent=2)) + 1, True),
        ("b.json", "application/json", len(json.dumps([1, 2, 3], indent=2)) + 1, True)]
    assert [f.name for f in OMEROFileBackend(conn, namespace="my.lab/notes").list(f"Well:{wid}")] == ["note.txt"]
    assert OMEROFileBackend(conn, namespace="my.lab/notes").load("note.txt", f"Well:{wid}") == b"a note"


def _key_values_in_the_namespace(conn, well_id: int) -> None:
    import omero.model
    from omero.rtypes import rstring

    ann = omero.model.MapAnnotationI()
    ann.setNs(rstring(NS))
    ann.setMapValue([omero.model.NamedValue("a", "b")])
    ann = conn.getUpdateService().saveAndReturnObject(ann)
    link_annotation(conn, "Well", well_id, "MapAnnotation", ann.getId().getValue())


# ---- replacing -------------------------------------------------------------------------------------

def test_saving_a_name_again_replaces_your_file(server, files):
    store, pid = server.store, server.plate_id
    first = files.save({"version": 1}, "settings.json", f"Plate:{pid}")
    before = snapshot(store)
    second = files.save({"version": 2}, "settings.json", f"Plate:{pid}")
    assert second.replaced == 1 and second.file.annotation_id != first.file.annotation_id
    on_plate = [a for a in store.annotations_on("Plate", pid, NS) if file_of(store, a).getName().getValue()
                == "settings.json"]
    assert [a.getId().getValue() for a in on_plate] == [second.file.annotation_id]
    assert store.get("FileAnnotation", first.file.annotation_id) is None
    assert store.get("OriginalFile", first.file.file_id) is None  # its file went with it
    assert created_since(before, snapshot(store)).keys() == {"OriginalFile", "FileAnnotation",
                                                              "PlateAnnotationLink", "files"}
    assert files.load("settings.json", f"Plate:{pid}") == {"version": 2}


@pytest.mark.parametrize("permissions", ["rwra--", "rwrw--"])
def test_another_users_file_of_the_same_name_is_left_alone(server, tiny_plate, permissions):
    """carol saved 'shared.json' on alice's plate; alice saves the same name twice: her
    second replaces her first, carol's stays (in a read-write group alice could delete
    it), and each of them loads their own."""
    from openhcs_omero_lib.api import OMEROFileBackend

    group, carol, password = _group(server, permissions)
    pid = server.import_plate(tiny_plate, name=f"shared-{permissions}", group=group)
    store = server.store
    with gateway(server) as alice, gateway(server, carol, password) as theirs:
        mine, other = OMEROFileBackend(alice), OMEROFileBackend(theirs)
        carols = other.save({"by": "carol"}, "shared.json", f"Plate:{pid}")
        first = mine.save({"by": "alice", "n": 1}, "shared.json", f"Plate:{pid}")
        assert first.replaced == 0 and first.others == {carol: 1}
        second = mine.save({"by": "alice", "n": 2}, "shared.json", f"Plate:{pid}")
        assert second.replaced == 1 and second.others == {carol: 1}
        assert store.get("FileAnnotation", carols.file.annotation_id) is not None
        kept = sorted(a.getId().getValue() for a in store.annotations_on("Plate", pid, NS))
        assert kept == sorted([carols.file.annotation_id, second.file.annotation_id])
        assert mine.load("shared.json", f"Plate:{pid}") == {"by": "alice", "n": 2}
        assert other.load("shared.json", f"Plate:{pid}") == {"by": "carol"}
        assert [(f.name, f.mine) for f in other.list(f"Plate:{pid}")] == [("shared.json", True),
                                                                           ("shared.json", False)]
        # a name only carol used: alice loads hers (the newest of anyone's)
        other.save({"v": 1}, "hers.json", f"Plate:{pid}")
        other.save({"v": 2}, "hers.json", f"Plate:{pid}")
        assert mine.load("hers.json", f"Plate:{pid}") == {"v": 2}


def test_a_failed_save_leaves_nothing_and_keeps_your_earlier_file(server, files):
    import omero

    store, pid = server.store, server.plate_id
    files.save({"kept": True}, "precious.json", f"Plate:{pid}")
    before = snapshot(store)
    server.fail("IUpdate.saveArray", omero.InternalException(message="disk full"), times=1)
    try:
        with pytest.raises(omero.InternalException):
            files.save({"kept": False}, "precious.json", f"Plate:{pid}")
    finally:
        server.clear_failures()
    assert created_since(before, snapshot(store)) == {}
    assert files.load("precious.json", f"Plate:{pid}") == {"kept": True}


# ---- bad targets and bad input: clear errors, nothing written ------------------------------------------

def _refused(server, files, call, words):
    from openhcs_omero_lib.api import TargetError

    before, calls = snapshot(server.store), collections.Counter(server.calls)
    with pytest.raises((TargetError, ValueError, TypeError, FileNotFoundError)) as err:
        call()
    message = str(err.value)
    for word in words:
        assert word in message, message
    assert "\n" not in message
    assert created_since(before, snapshot(server.store)) == {}
    assert calls_since(server, calls)["RawFileStore.write"] == 0
    return err.value


def test_a_target_of_the_wrong_kind(server, files):
    from openhcs_omero_lib.api import TargetError

    dataset = server.add_dataset("not a plate")
    err = _refused(server, files, lambda: files.save({}, "x.json", f"Dataset:{dataset}"),
                   [f"'Dataset:{dataset}' is a Dataset", "Plate, a Well or an Image"])
    assert isinstance(err, TargetError)
    wid = _well_id(server, "A01")
    _refused(server, files, lambda: files.save({}, "x.json", f"Plate:{wid}"),
             [f"Plate:{wid} does not exist: ID {wid} is a Well, not a Plate"])
    _refused(server, files, lambda: files.save({}, "x.json", server.plate_id),
             [f"{server.plate_id} is an ID without its kind", f"'Plate:{server.plate_id}'"])
    _refused(server, files, lambda: files.list(object()), ["not a target: a object"])


def test_a_missing_id_or_well_or_field(server, files):
    pid = server.plate_id
    _refused(server, files, lambda: files.save({}, "x.json", "Image:987654"),
             ["no Image with ID 987654 (or you may not read it)"])
    _refused(server, files, lambda: files.list("/omero/plate_987654/A01"), ["no Plate with ID 987654"])
    _refused(server, files, lambda: files.save({}, f"/omero/plate_{pid}/H12/x.json"), [f"plate {pid} has no well H12"])
    _refused(server, files, lambda: files.save({}, f"/omero/plate_{pid}/A01_s009/x.json"),
             [f"well A01 of plate {pid} has no field 9"])
    _refused(server, files, lambda: files.load("never-saved.json", f"Plate:{pid}"),
             [f"no file named 'never-saved.json' on Plate:{pid}"])
    _refused(server, files, lambda: files.list(f"/omero/plates/{pid}"), ["not a virtual path"])


def test_no_permission(server, tiny_plate):
    """A read-only group: alice reads carol's plate but may not annotate it; a private
    group: another member's plate is not there at all."""
    from openhcs_omero_lib.api import OMEROFileBackend

    group, carol, _ = _group(server, "rwr---")
    theirs = server.import_plate(tiny_plate, name="read-only", owner=server.store.users[carol], group=group)
    private, dave, _ = _group(server, "rw----")
    hidden = server.import_plate(tiny_plate, name="private", owner=server.store.users[dave], group=private)
    with gateway(server) as conn:
        files = OMEROFileBackend(conn)
        _refused(server, files, lambda: files.save({}, "x.json", f"Plate:{theirs}"),
                 [f"you have no permission to annotate Plate:{theirs}",
                  "another user's, in a read-only group"])
        _refused(server, files, lambda: files.save({}, f"/omero/plate_{theirs}/A01/x.json"),
                 ["you have no permission to annotate well A01", "read-only group"])
        assert files.list(f"Plate:{theirs}") == []  # reading is allowed
        _refused(server, files, lambda: files.save({}, "x.json", f"Plate:{hidden}"),
                 [f"no Plate with ID {hidden} (or you may not read it)"])


@pytest.mark.parametrize("obj, name, words", [
    ({"a": 1}, "a.csv", ["a dict is saved as JSON", "'a.csv'"]),
    (pd.DataFrame({"a": [1]}), "a.json", ["a DataFrame is saved as CSV"]),
    ({1, 2}, "a.json", ["cannot save a set"]),
    ({"a": float("nan")}, "a.json", ["cannot be written as JSON"]),
    ({"a": 1}, "", ["is not a file name"]),
    ({"a": 1}, "dir/a.json", ["is not a file name"]),
])
def test_bad_content_or_name(server, files, obj, name, words):
    _refused(server, files, lambda: files.save(obj, name, f"Plate:{server.plate_id}"), words)
