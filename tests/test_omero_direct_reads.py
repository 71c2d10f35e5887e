"""Reading a plate's planes straight from its files in the managed repository
(``Pixel_Access`` auto), against the stand-in, whose imports put the plate's files in a
managed repository as a server does and whose RawPixelsStore reads them there.

Every way the files can be unfit is tried: on this machine's view of the repository
(a mount, mapped by the administrator's settings file), a file unreadable, moved,
of another size, of other pixels, a FIFO; in the repository itself, a file or a folder
that is a link leading outside it; a path from the server holding ``..``. Each falls
back to RawPixelsStore with its reason, and the results are those RawPixelsStore gives.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile

from omero_fixtures import NS, RUN_SCRIPT, calls_since, csv_rows, file_name, gateway, standin

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(small_and_multi_server):
    return small_and_multi_server


@pytest.fixture(autouse=True)
def settings_dir(tmp_path, monkeypatch):
    """The administrator's settings, in the server's folder (``$OMERODIR``): the
    defaults unless a test writes others, so that no file of this machine counts."""
    monkeypatch.setenv("OMERODIR", str(tmp_path / "omerodir"))
    monkeypatch.delenv("OMERO_HOME", raising=False)
    write_settings(tmp_path / "omerodir", "direct_reads: true\n")
    return tmp_path / "omerodir"


def write_settings(omerodir: Path, text: str) -> Path:
    path = omerodir / "etc" / "openhcs-omero" / "repositories.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _plate(conn, pid):
    from openhcs_omero_lib.omero.plate import load_plate

    return load_plate(conn, pid, cache=None)


def _open(conn, pid, access="auto", settings=None):
    from openhcs_omero_lib.omero.direct_pixels import open_pixels

    return open_pixels(conn, _plate(conn, pid), access, settings)


def _script(conn, pid, **params):
    from openhcs_omero_lib.omero.script_support import run_pipeline_script

    return run_pipeline_script(conn, {"Data_Type": "Plate", "IDs": [pid], "Workers": 1,
                                      "Attach_To": "Plate", **params})


def _results(server, pid) -> dict[str, list[dict[str, str]]]:
    """The attached CSVs, row by row."""
    store = server.store
    found = {}
    for ann in store.annotations_on("Plate", pid, NS):
        name = file_name(store, ann)
        if name.endswith(".csv"):
            found[name] = csv_rows(store, ann)
    return found


def _files_of(server, pid) -> dict[tuple, Path]:
    """Each plane's file in the server's repository, as the adapter maps them."""
    from openhcs_omero_lib.omero.repository import find_plate_files
    from openhcs_omero_lib.omero.repository_settings import RepositorySettings

    with gateway(server) as conn:
        found = find_plate_files(conn, _plate(conn, pid), RepositorySettings())
    return {key: Path(found.root) / relative for key, relative in found.files.items()}


def _mirror(server, tmp_path, settings_dir) -> Path:
    """A copy of the managed repository standing for this machine's mount of it,
    mapped there by the settings file; returns the copy's root."""
    copy = tmp_path / "mnt" / "ManagedRepository"
    shutil.copytree(server.managed_repository, copy, symlinks=True)
    write_settings(settings_dir, f"mounts:\n  {server.managed_repository}: {copy}\n")
    return copy


def _in_mirror(server, copy: Path, path: Path) -> Path:
    return copy / path.relative_to(server.managed_repository)


def _verified_file(server, pid) -> Path:
    """The file of the first plane :func:`~.direct_pixels.verify` compares."""
    from openhcs_omero_lib.omero.direct_pixels import _verification_planes

    with gateway(server) as conn:
        unit, channel, z = _verification_planes(_plate(conn, pid))[0]
    return _files_of(server, pid)[(unit.well, unit.site, channel, z, unit.timepoint)]


def _unverified_file(server, pid) -> Path:
    from openhcs_omero_lib.omero.direct_pixels import _verification_planes

    with gateway(server) as conn:
        checked = {(u.well, u.site, c, z, u.timepoint) for u, c, z in _verification_planes(_plate(conn, pid))}
    return next(path for key, path in sorted(_files_of(server, pid).items()) if key not in checked)


# ---- the stand-in's repositories, as a server's ------------------------------------------------

def test_the_repositories_are_described_as_omero_fs_repos_lists_them(server):
    """Three repositories; the managed one is the one whose proxy is a
    ManagedRepository, and its root is its description's path and name."""
    import omero.grid
    from omero.rtypes import unwrap

    with gateway(server) as conn:
        repos = conn.c.sf.sharedResources().repositories()
        kinds = [(unwrap(d.getHash()), omero.grid.ManagedRepositoryPrx.checkedCast(p) is not None)
                 for d, p in zip(repos.descriptions, repos.proxies)]
        managed = [d for d, p in zip(repos.descriptions, repos.proxies)
                   if omero.grid.ManagedRepositoryPrx.checkedCast(p) is not None]
    assert len(kinds) == 3 and sum(m for _, m in kinds) == 1 and ("ScriptRepo", False) in kinds
    [description] = managed
    assert unwrap(description.getPath()) + unwrap(description.getName()) == str(server.managed_repository)
    assert unwrap(description.getMimetype()) == "Repository" and unwrap(description.getPath()).endswith("/")


def test_an_import_puts_the_used_files_in_a_new_folder_of_the_template(server, small_plate):
    """``%user%_%userId%/%year%-%month%/%day%/%time%``, one Fileset holding every image
    and listing the plate's .HTD and images (not its other files), paths relative to
    the root with a final ``/``."""
    store = server.store
    image_ids = {ws.getImage().getId().getValue() for w in store.children("Well", "plate", server.small_id)
                 for ws in store.children("WellSample", "well", w.getId().getValue())}
    filesets = {store.get("Image", i).getFileset().getId().getValue() for i in image_ids}
    assert len(filesets) == 1
    [fsid] = filesets
    prefix = store.get("Fileset", fsid).getTemplatePrefix().getValue()
    assert re.fullmatch(rf"{server.user.name}_{server.user.id}/\d{{4}}-\d\d/\d\d/\d\d-\d\d-\d\d\.\d{{3}}/", prefix)
    files = [store.resolve(e.getOriginalFile()) for e in store.children("FilesetEntry", "fileset", fsid)]
    names = {f.getName().getValue() for f in files}
    assert "SMALL.HTD" in names and "ground_truth.csv" not in names
    assert len(files) == 1 + small_plate.config.wells * small_plate.config.sites * small_plate.config.channels
    for f in files:
        path = f.getPath().getValue()
        assert path.startswith(prefix) and path.endswith("/") and not path.startswith("/")
        on_disk = server.managed_repository / path / f.getName().getValue()
        assert on_disk.is_file() and on_disk.stat().st_size == f.getSize().getValue()
    other = store.get("Fileset", max(store.objects["Fileset"])).getTemplatePrefix().getValue()
    assert other != prefix  # the z/t plate's import has a folder of its own


def test_a_plates_files_cost_one_query_whatever_its_size(fake_384_plate, small_plate):
    from openhcs_omero_lib.omero.repository import plate_files

    folder, layout = fake_384_plate
    with standin() as server, gateway(server) as conn:
        small = server.import_plate(small_plate.folder)
        big = server.import_plate(folder, transfer="ln")  # 13824 files: linked, not copied
        for pid, planes in ((small, small_plate.config.wells * small_plate.config.sites * 2),
                            (big, layout.n_units * len(layout.channels))):
            plate = _plate(conn, pid)
            before = collections.Counter(server.calls)
            rows = plate_files(conn, plate)
            assert +calls_since(server, before) == {"IQuery.projection": 1}
            assert len(rows) == planes + 1 and len({(r.path, r.name) for r in rows}) == len(rows)
            assert {r.fileset_images for r in rows} == {len(plate.all_image_ids)}


def test_a_filesets_images_are_deleted_together_or_not_at_all(server, tiny_plate):
    from openhcs_omero_lib.omero import annotations as A

    pid = server.import_plate(tiny_plate)
    with gateway(server) as conn:
        plate = _plate(conn, pid)
        with pytest.raises(RuntimeError, match=r"within Fileset:\d+ may not delete Image:\d+ while Image:\d+ remains"):
            A.delete_objects(conn, {"Image": [plate.all_image_ids[0]]}, plate.group_id)
    assert server.store.get("Image", plate.all_image_ids[0]) is not None


def test_a_private_colleagues_files_are_not_listed(tiny_plate):
    from openhcs_omero_lib.omero.repository import plate_files

    with standin() as server:
        group = server.add_group("private-lab", "rw----")
        server.add_user("carol", "carol-password", [group])
        bob = server.add_user("bob", "bob-password", [group])
        theirs = server.import_plate(tiny_plate, owner=bob, group=group)
        with gateway(server, "bob", "bob-password") as conn:
            plate = _plate(conn, theirs)
            assert plate_files(conn, plate)
        with gateway(server, "carol", "carol-password") as conn:
            assert plate_files(conn, plate) == []


# ---- reading directly ---------------------------------------------------------------------------

def test_the_script_reads_files_and_only_the_checked_planes_through_rawpixelsstore(server, small_plate):
    """Run_HCS_Pipeline run as the Processor runs it, with workers: RawPixelsStore sends
    one plane per channel, the ones compared with the files, and nothing else."""
    from omero.rtypes import rint, rlist, rlong, rstring

    from openhcs_omero_lib.testing.processor import run_script

    before = collections.Counter(server.calls)
    run = run_script(server, RUN_SCRIPT, {"Data_Type": rstring("Plate"), "IDs": rlist([rlong(server.small_id)]),
                                          "Workers": rint(2), "Attach_To": rstring("Plate")})
    calls = calls_since(server, before)
    message = run.output("Message")
    assert run.returncode == 0 and "failed" not in message, run.stderr
    assert "pixels read from the managed repository (2 planes checked against RawPixelsStore)" in message
    assert calls["RawPixelsStore.getPlane"] == small_plate.config.channels == 2
    assert calls["RawPixelsStore.getStack"] == calls["RawPixelsStore.getTile"] == 0
    # the other store is the check before the run that the plate's images are ready
    assert calls["ServiceFactory.createRawPixelsStore"] == calls["RawPixelsStore.close"] == 2
    rows = _results(server, server.small_id)["nuclei_count_images.csv"]
    assert len(rows) == small_plate.config.wells * small_plate.config.sites and not any(r["error"] for r in rows)


def test_auto_and_server_attach_the_same_results(server):
    """On a plate with z planes and timepoints, read both ways: the same CSVs, cell for cell."""
    with gateway(server) as conn:
        by_server = _script(conn, server.multi_id, Pixel_Access="server")
        assert by_server.ok and "pixels read" not in by_server.message, by_server.message
        first = _results(server, server.multi_id)
        before = collections.Counter(server.calls)
        direct = _script(conn, server.multi_id)
        assert direct.ok and "pixels read from the managed repository" in direct.message, direct.message
    assert calls_since(server, before)["RawPixelsStore.getPlane"] == 2
    second = _results(server, server.multi_id)
    assert set(first) == {"nuclei_count_images.csv", "nuclei_count_wells.csv"} and first == second


def test_every_plane_read_from_its_file_is_the_servers(server, multi_plate):
    """Each plane of a plate of 2 z planes and 2 timepoints, from its file and through
    RawPixelsStore: the same bytes (TimePoint_ and ZStep_ folders mapped as a local
    folder's)."""
    from openhcs_omero_lib.omero.direct_pixels import DirectPixelSource
    from openhcs_omero_lib.omero.pixels import OmeroPixelSource

    with gateway(server) as conn:
        source, access = _open(conn, server.multi_id)
        assert isinstance(source, DirectPixelSource) and access.verified == 2
        layout = source.layout
        with source, OmeroPixelSource(conn, _plate(conn, server.multi_id)) as remote:
            for unit in layout.units():
                for c in range(1, len(layout.channels) + 1):
                    for z in range(1, layout.z_planes + 1):
                        mine = source.read_file(unit.well, unit.site, c, z, unit.timepoint)
                        theirs = remote.read_plane(unit.well, unit.site, c, z, unit.timepoint)
                        assert mine.dtype == theirs.dtype and mine.tobytes() == theirs.tobytes()
    assert layout.z_planes == multi_plate.config.z_planes == 2 and layout.timepoints == 2


def test_workers_reading_files_need_no_session(server, small_plate, monkeypatch):
    from openhcs_omero_lib.execution import executor
    from openhcs_omero_lib.omero.run import pipeline_from_choice, prepare, run_on_plate

    monkeypatch.setattr(executor, "PARENT_COMPUTES", False)  # spawned workers compute everything
    with gateway(server) as conn:
        spec = pipeline_from_choice(conn, "nuclei_count", None)
        [(plate, bound)] = prepare(conn, "Plate", [server.small_id], spec)
        before = collections.Counter(server.calls)
        run = run_on_plate(conn, plate, bound, workers=2, attach_to=("plate",), outputs=("csv",))
    calls = calls_since(server, before)
    assert run.access.path == "direct" and run.results.summary["pixel_access"]["path"] == "direct"
    assert (run.results.images["error"] == "").all() and len(run.results.images) == plate.layout.n_units
    assert calls["sessions.joined"] == 0 and calls["RawPixelsStore.getPlane"] == 2


def test_a_mount_mapped_by_the_settings_is_read(server, tmp_path, settings_dir):
    from openhcs_omero_lib.omero.repository_settings import load_settings

    copy = _mirror(server, tmp_path, settings_dir)
    with gateway(server) as conn:
        source, access = _open(conn, server.small_id)
        source.close()
    assert access.path == "direct" and source.root == os.path.realpath(copy)
    # a parent folder of the root maps it too
    write_settings(settings_dir, f"mounts:\n  {server.managed_repository.parent}: {copy.parent}\n")
    assert load_settings().local_root(str(server.managed_repository)) == str(copy)


def test_a_file_that_fails_during_the_run_is_read_through_rawpixelsstore(server, tmp_path, settings_dir):
    """The checks passed, then a file went: that plane and the later ones of this
    process come through RawPixelsStore, the results are those of RawPixelsStore, and
    the run says so."""
    from openhcs_omero_lib.omero import run as R

    copy = _mirror(server, tmp_path, settings_dir)
    lost = _in_mirror(server, copy, _unverified_file(server, server.small_id))
    real_open = R.open_pixels

    def open_then_lose(*args, **kwargs):
        opened = real_open(*args, **kwargs)
        lost.unlink()
        return opened

    with gateway(server) as conn:
        assert _script(conn, server.small_id, Pixel_Access="server").ok
        expected = _results(server, server.small_id)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(R, "open_pixels", open_then_lose)
            outcome = _script(conn, server.small_id)
    assert outcome.ok, outcome.message
    assert "pixels read from the managed repository (2 planes checked against RawPixelsStore); some planes " \
           "were read through RawPixelsStore: " in outcome.message and lost.name in outcome.message
    assert _results(server, server.small_id) == expected


# ---- refusals ------------------------------------------------------------------------------------

def _refused(server, pid, why: str, settings=None) -> None:
    """Auto reads through RawPixelsStore for ``why`` (a regular expression)."""
    from openhcs_omero_lib.omero.pixels import OmeroPixelSource

    with gateway(server) as conn:
        source, access = _open(conn, pid, settings=settings)
        source.close()
    assert isinstance(source, OmeroPixelSource) and access.path == "server", access
    assert re.search(why, access.reason), access.reason
    assert access.note() == f"pixels read through RawPixelsStore: {access.reason}"


def _script_falls_back(server, pid, why: str) -> None:
    """The script, too: the Message says why in one part, the results are RawPixelsStore's."""
    with gateway(server) as conn:
        assert _script(conn, pid, Pixel_Access="server").ok
        expected = _results(server, pid)
        outcome = _script(conn, pid)
    parts = [p for p in outcome.message.split("; ") if p.startswith("pixels read")]
    assert outcome.ok and len(parts) == 1 and re.search(why, parts[0]), outcome.message
    assert parts[0].startswith("pixels read through RawPixelsStore: ")
    assert _results(server, pid) == expected


def test_a_file_of_other_pixels_is_caught_by_the_check(server, tmp_path, settings_dir):
    """Same size, other pixels, on this machine's view of the repository."""
    copy = _mirror(server, tmp_path, settings_dir)
    changed = _in_mirror(server, copy, _verified_file(server, server.small_id))
    with tifffile.TiffFile(changed) as tif:
        last = tif.pages[0].dataoffsets[0] + tif.pages[0].databytecounts[0] - 1  # the last pixel's high byte
    data = bytearray(changed.read_bytes())
    data[last] ^= 0xFF
    changed.write_bytes(bytes(data))
    _refused(server, server.small_id, r"the file of well \w+ field \d channel 1 z 1 t 1 \(.*\) differs from "
                                      r"what RawPixelsStore returns")
    _script_falls_back(server, server.small_id, "differs from what RawPixelsStore returns")


def test_a_file_of_another_size_is_refused(server, tmp_path, settings_dir):
    copy = _mirror(server, tmp_path, settings_dir)
    changed = _in_mirror(server, copy, _unverified_file(server, server.small_id))
    with changed.open("ab") as f:
        f.write(b"\0" * 16)
    _refused(server, server.small_id, rf"{re.escape(changed.name)} has \d+ bytes, the server recorded \d+")


def test_a_moved_file_is_refused(server, tmp_path, settings_dir):
    copy = _mirror(server, tmp_path, settings_dir)
    moved = _in_mirror(server, copy, _unverified_file(server, server.small_id))
    moved.rename(moved.with_name("elsewhere.TIF"))
    _refused(server, server.small_id, rf"{re.escape(moved.name)} cannot be opened \(No such file or directory\)")
    _script_falls_back(server, server.small_id, "cannot be opened")


def test_a_fifo_is_refused_without_waiting(server, tmp_path, settings_dir):
    copy = _mirror(server, tmp_path, settings_dir)
    replaced = _in_mirror(server, copy, _unverified_file(server, server.small_id))
    replaced.unlink()
    os.mkfifo(replaced)
    _refused(server, server.small_id, rf"{re.escape(replaced.name)} is not a regular file")


_UNREADABLE = """
import json, sys
from openhcs_omero_lib.omero.connection import ServerAddress, join_session
from openhcs_omero_lib.omero.direct_pixels import open_pixels
from openhcs_omero_lib.omero.plate import load_plate
from omero.gateway import BlitzGateway
request = json.loads(sys.stdin.read())
client = join_session(ServerAddress(request["host"], request["port"], request["router"]), request["key"])
try:
    conn = BlitzGateway(client_obj=client)
    source, access = open_pixels(conn, load_plate(conn, request["plate"], cache=None))
    source.close()
    print(json.dumps(access.summary()))
finally:
    client.closeSession()
"""


def _without_file_privileges():
    """As root, drop the capabilities that let root read any file (CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH), so that a file's mode counts for the process."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_an_unreadable_file_is_refused(server, tmp_path, settings_dir):
    """Checked by a process for which the file's mode counts (as root, one without
    the privilege to read any file), joined to the user's session as a worker is."""
    copy = _mirror(server, tmp_path, settings_dir)
    locked = _in_mirror(server, copy, _unverified_file(server, server.small_id))
    locked.chmod(0)
    with gateway(server) as conn:
        request = {"host": server.host, "port": server.port, "router": server.router, "key": conn.c.getSessionId(),
                   "plate": server.small_id}
        done = subprocess.run([sys.executable, "-c", _UNREADABLE], input=json.dumps(request), capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120,
                              preexec_fn=_without_file_privileges if os.geteuid() == 0 else None)
    assert done.returncode == 0, done.stderr
    access = json.loads(done.stdout.strip().splitlines()[-1])
    assert access["path"] == "server"
    assert access["reason"] == f"{locked.relative_to(copy)} cannot be opened (Permission denied)"


def test_a_link_leading_outside_the_repository_is_refused(server, tiny_plate, tmp_path):
    """In the repository itself (as an in-place import would make it): a file that is
    a link to a copy outside, then a folder that is one. RawPixelsStore still reads."""
    pid = server.import_plate(tiny_plate)
    target = _unverified_file(server, pid)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copyfile(target, outside / target.name)
    target.unlink()
    target.symlink_to(outside / target.name)
    _refused(server, pid, rf"{re.escape(target.name)} leads outside the repository \({re.escape(str(outside))}/")
    _script_falls_back(server, pid, "leads outside the repository")

    target.unlink()
    shutil.copyfile(outside / target.name, target)  # back as it was, then its folder goes
    folder = target.parent
    shutil.copytree(folder, outside / folder.name)
    shutil.rmtree(folder)
    folder.symlink_to(outside / folder.name, target_is_directory=True)
    _refused(server, pid, "leads outside the repository")


def test_a_folder_turned_into_a_link_during_the_run_is_caught(server, tmp_path, settings_dir):
    """Folders are resolved once per run; one swapped for a link to a copy outside the
    repository afterwards is caught when a file in it is opened (its own path is
    checked), and that plane comes through RawPixelsStore."""
    from openhcs_omero_lib.omero.direct_pixels import DirectPixelSource
    from openhcs_omero_lib.omero.pixels import OmeroPixelSource

    copy = _mirror(server, tmp_path, settings_dir)
    files = {key: _in_mirror(server, copy, path) for key, path in _files_of(server, server.small_id).items()}
    first, second = sorted(files)[:2]
    folder = files[first].parent
    assert files[second].parent == folder
    with gateway(server) as conn:
        source, access = _open(conn, server.small_id)
        assert isinstance(source, DirectPixelSource)
        with source, OmeroPixelSource(conn, _plate(conn, server.small_id)) as remote:
            source.read_plane(*first)
            outside = tmp_path / "outside" / folder.name
            shutil.copytree(folder, outside)
            shutil.rmtree(folder)
            folder.symlink_to(outside, target_is_directory=True)
            plane = source.read_plane(*second)
            assert plane.tobytes() == remote.read_plane(*second).tobytes()
    assert source.fell_back == f"{files[second].relative_to(copy)} changed while it was opened"


def test_a_path_from_the_server_that_climbs_out_is_refused(server, tiny_plate):
    from omero.rtypes import rstring

    pid = server.import_plate(tiny_plate)
    store = server.store
    [fileset] = {store.get("Image", i).getFileset().getId().getValue() for i in _image_ids(server, pid)}
    entry = store.children("FilesetEntry", "fileset", fileset)[-1]
    ofile = store.resolve(entry.getOriginalFile())
    original = ofile.getPath()
    ofile.setPath(rstring(original.getValue() + "../../../../../../"))
    try:
        _refused(server, pid, r"the server lists a file at '.*\.\./\.\./.*', outside its repository")
    finally:
        ofile.setPath(original)


def _image_ids(server, pid) -> list[int]:
    store = server.store
    return [ws.getImage().getId().getValue() for w in store.children("Well", "plate", pid)
            for ws in store.children("WellSample", "well", w.getId().getValue())]


def test_the_server_planes_to_compare_are_read_while_the_files_are_looked_up(server):
    """The checks' round-trips overlap: RawPixelsStore's planes are on their way while
    the query for the plate's files is still open (it holds until one is read)."""
    import threading

    from openhcs_omero_lib.omero.direct_pixels import open_pixels

    read, overlapped = threading.Event(), []
    with gateway(server) as conn:
        plate = _plate(conn, server.small_id)
        server.fail("RawPixelsStore.getPlane", read.set, times=1)
        server.fail("IQuery.projection", lambda: overlapped.append(read.wait(10)), times=1)
        try:
            source, access = open_pixels(conn, plate)
            source.close()
        finally:
            server.clear_failures()
    assert access.path == "direct", access.reason
    assert overlapped == [True]


def test_every_repository_is_asked_at_once(server):
    """Which repository is the managed one: one question to each, sent together
    (checkedCast would ask them in turn)."""
    import threading

    from openhcs_omero_lib.omero.repository import managed_repository

    asked: list[str] = []
    answered_together: list[bool] = []
    all_asked = threading.Event()
    with gateway(server) as conn:
        count = len([p for p in conn.c.sf.sharedResources().repositories().proxies if p is not None])

        def hold(kind):
            def held():
                asked.append(kind)
                if len(asked) == count:
                    all_asked.set()
                answered_together.append(all_asked.wait(5))  # no answer before every question has come
            return held

        for kind in ("Repository", "ManagedRepository"):
            server.fail(f"{kind}.ice_isA", hold(kind))
        try:
            found = managed_repository(conn)
        finally:
            server.clear_failures()
    assert count >= 2 and len(asked) == count and answered_together == [True] * count
    assert found is not None and found.root.rstrip("/") == str(server.managed_repository).rstrip("/")


@pytest.mark.parametrize("access, settings, asked", [("auto", "direct_reads: true\n", 1),
                                                     ("server", "direct_reads: true\n", 0),
                                                     ("auto", "direct_reads: false\n", 0)])
def test_the_repository_is_looked_up_while_the_plates_load_and_once(server, settings_dir, access, settings, asked):
    """A run that may read files starts finding the managed repository when it loads
    its plates (prepare), and checking the files then asks nothing more of it; one
    that reads through RawPixelsStore, or where direct reads are off, asks nothing."""
    from openhcs_omero_lib.omero import repository
    from openhcs_omero_lib.omero.direct_pixels import open_pixels
    from openhcs_omero_lib.omero.repository import start_repository_lookup
    from openhcs_omero_lib.omero.run import prepare
    from openhcs_omero_lib.pipeline.loading import resolve_pipeline

    write_settings(settings_dir, settings)
    with gateway(server) as conn:
        before = collections.Counter(server.calls)
        [(plate, _)] = prepare(conn, "Plate", [server.small_id], resolve_pipeline("nuclei_count")[0],
                               pixel_access=access)
        assert (conn in repository._lookups) == bool(asked)  # begun by prepare
        if asked:
            start_repository_lookup(conn).result(timeout=30)
            assert calls_since(server, before)["SharedResources.repositories"] == 1
        source, found = open_pixels(conn, plate, access)
        source.close()
    assert calls_since(server, before)["SharedResources.repositories"] == asked
    assert found.path == ("direct" if asked else "server")


def test_a_plates_files_are_checked_while_the_run_prepares(server, monkeypatch):
    """prepare begins each plate's checks once the plate is loaded: its files are asked
    for while prepare's own last check (the plate's readiness) is still to come, and
    the run then finds them done, with nothing more to ask."""
    import threading

    from openhcs_omero_lib.omero import repository
    from openhcs_omero_lib.omero import run as R
    from openhcs_omero_lib.omero.direct_pixels import open_pixels
    from openhcs_omero_lib.pipeline.loading import resolve_pipeline

    asked, queries = threading.Event(), []
    real_files, real_ready = repository.plate_files, R.check_ready
    monkeypatch.setattr(repository, "plate_files", lambda *a: (asked.set(), queries.append(1), real_files(*a))[2])
    waited = []
    monkeypatch.setattr(R, "check_ready", lambda *a: (waited.append(asked.wait(10)), real_ready(*a))[1])
    with gateway(server) as conn:
        before = collections.Counter(server.calls)
        [(plate, _)] = R.prepare(conn, "Plate", [server.small_id], resolve_pipeline("nuclei_count")[0],
                                 pixel_access="auto")
        source, access = open_pixels(conn, plate)
        source.close()
        calls = calls_since(server, before)
    assert waited == [True]
    assert access.path == "direct" and access.verified == 2, access.reason
    assert queries == [1] and calls["RawPixelsStore.getPlane"] == 2  # checked once, ahead


def test_checks_begun_for_a_request_that_fails_are_dropped(server, monkeypatch):
    """A request that fails after its plates' checks began leaves no store open on the
    server and no check behind for a later run to pick up."""
    from openhcs_omero_lib.omero import direct_pixels
    from openhcs_omero_lib.omero import run as R
    from openhcs_omero_lib.omero.plate import OmeroInputError
    from openhcs_omero_lib.pipeline.loading import resolve_pipeline

    def refuse(conn, plates):
        raise OmeroInputError("refused for the test")

    monkeypatch.setattr(R, "check_ready", refuse)
    with gateway(server) as conn:
        with pytest.raises(OmeroInputError, match="refused for the test"):
            R.prepare(conn, "Plate", [server.small_id, server.multi_id], resolve_pipeline("nuclei_count")[0],
                      pixel_access="auto")
        assert conn not in direct_pixels._lookups
        assert server.open_stateful["RawPixelsStore"] == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("openhcs-checks")]


def test_a_screens_plates_are_looked_up_one_ahead(server, monkeypatch):
    """Of several plates, prepare looks up the first one's files; each next plate's are
    looked up when the run opens the one before (while it computes), not all at once:
    no plate's files wait in memory long before its turn. Each plate's once."""
    from openhcs_omero_lib.omero import repository
    from openhcs_omero_lib.omero import run as R
    from openhcs_omero_lib.omero.direct_pixels import _lookups, open_pixels
    from openhcs_omero_lib.pipeline.loading import resolve_pipeline

    looked_up: list[int] = []
    real_files = repository.plate_files
    monkeypatch.setattr(repository, "plate_files", lambda conn, plate: (looked_up.append(plate.id),
                                                                        real_files(conn, plate))[1])
    with gateway(server) as conn:
        prepared = R.prepare(conn, "Plate", [server.small_id, server.multi_id], resolve_pipeline("nuclei_count")[0],
                             pixel_access="auto")
        [first, second] = [plate for plate, _ in prepared]
        _lookups[conn].begun[1].result(timeout=30)
        assert looked_up == [first.id]
        source, access = open_pixels(conn, first)
        source.close()
        assert access.path == "direct", access.reason
        _lookups[conn].begun[1].result(timeout=30)
        assert looked_up == [first.id, second.id]  # begun as the first plate was opened
        source, access = open_pixels(conn, second)
        source.close()
        assert access.path == "direct", access.reason
    assert looked_up == [first.id, second.id]


def test_checks_begun_for_another_load_of_the_plate_are_not_used(server):
    """open_pixels uses checks begun for that very plate object only: a plate loaded
    again (its runs or channels may differ) is checked again, and the lookup begun
    for the first object still waits for it."""
    from openhcs_omero_lib.omero.direct_pixels import open_pixels
    from openhcs_omero_lib.omero.run import prepare
    from openhcs_omero_lib.pipeline.loading import resolve_pipeline

    with gateway(server) as conn:
        [(plate, _)] = prepare(conn, "Plate", [server.small_id], resolve_pipeline("nuclei_count")[0],
                               pixel_access="auto")
        again = _plate(conn, server.small_id)
        before = collections.Counter(server.calls)
        source, access = open_pixels(conn, again)
        source.close()
        calls = calls_since(server, before)
        assert access.path == "direct" and calls["IQuery.projection"] == 1 and calls["RawPixelsStore.getPlane"] == 2
        before = collections.Counter(server.calls)
        source, access = open_pixels(conn, plate)  # its own lookup waited for it
        source.close()
        assert access.path == "direct" and calls_since(server, before)["IQuery.projection"] == 0


def test_a_repository_that_fails_to_answer_is_passed_over(server):
    """Another repository that is down (its question fails) does not hide the managed
    one, as the server's own lookup skips it."""
    import Ice

    from openhcs_omero_lib.omero.repository import managed_repository

    with gateway(server) as conn:
        server.fail("Repository.ice_isA", Ice.SocketException())
        try:
            found = managed_repository(conn)
        finally:
            server.clear_failures()
        assert calls_since(server, collections.Counter())["Repository.ice_isA"] >= 1
    assert found is not None and found.root.rstrip("/") == str(server.managed_repository).rstrip("/")


def test_a_repository_not_on_this_machine_costs_no_query(server, tmp_path, settings_dir):
    from openhcs_omero_lib.omero.direct_pixels import open_pixels

    path = write_settings(settings_dir, f"mounts:\n  {server.managed_repository}: {tmp_path / 'not-mounted'}\n")
    with gateway(server) as conn:
        plate = _plate(conn, server.small_id)
        before = collections.Counter(server.calls)
        source, access = open_pixels(conn, plate)
        source.close()
    assert access.reason == (f"the managed repository {server.managed_repository} (mapped to "
                             f"{tmp_path / 'not-mounted'} by {path}) is not on this machine")
    calls = calls_since(server, before)
    assert calls["SharedResources.repositories"] == 1 and calls["RawPixelsStore.getPlane"] == 0
    assert calls["IQuery.projection"] == 0  # the plate's files were not asked for


def test_direct_reads_switched_off_ask_the_server_nothing(server, settings_dir):
    path = write_settings(settings_dir, "direct_reads: false\n")
    before = collections.Counter(server.calls)
    _refused(server, server.small_id, rf"direct reads are switched off \({re.escape(str(path))}\)")
    assert calls_since(server, before)["SharedResources.repositories"] == 0


@pytest.mark.parametrize("text, why", [
    ("mounts: [a, b]\n", "mounts must map server folders to local folders"),
    ("direct_reads: maybe\n", "direct_reads must be true or false"),
    ("mounts:\n  relative/root: /mnt\n", "is not an absolute folder"),
    ("mount: {}\n", "expected the keys direct_reads and mounts"),
    ("mounts: {\n", "while parsing"),
])
def test_a_bad_settings_file_is_named_and_read_through_rawpixelsstore(server, settings_dir, text, why):
    path = write_settings(settings_dir, text)
    _refused(server, server.small_id, rf"^{re.escape(str(path))}: .*{why}")


def test_a_plate_made_through_the_api_has_no_files(server, tiny_plate):
    from openhcs_omero_lib.testing.upload import upload_plate

    with gateway(server) as conn:
        pid = upload_plate(conn, tiny_plate)
    _refused(server, pid, "its images have no original files in the repository")


def test_a_plate_of_several_runs_is_read_through_rawpixelsstore(server, timelapse_runs):
    pid = server.import_plate(timelapse_runs)
    _refused(server, pid, "the plate has 2 acquisition runs")


def test_a_wrong_pixel_access_is_refused_before_anything(server):
    with gateway(server) as conn:
        before = collections.Counter(server.calls)
        outcome = _script(conn, server.small_id, Pixel_Access="disk")
    assert not outcome.ok and outcome.message == "Nothing attached: Pixel_Access must be one of auto, server, not disk"
    assert calls_since(server, before)["RawPixelsStore.getPlane"] == 0


# ---- the pieces --------------------------------------------------------------------------------

def test_paths_from_the_server_must_be_inside_their_repository():
    from openhcs_omero_lib.omero.repository import DirectReadRefused, relative_path

    assert relative_path("u_1/2026-01/02/03-04-05.006/P/", "P.HTD") == "u_1/2026-01/02/03-04-05.006/P/P.HTD"
    for path, name in (("/etc/", "passwd"), ("a/../../", "x.TIF"), ("a/", "../x.TIF"), ("a/", "b/x.TIF"),
                       ("a/", ""), ("a/", "..")):
        with pytest.raises(DirectReadRefused):
            relative_path(path, name)


def test_a_link_into_a_folder_named_like_the_repository_is_outside(tmp_path):
    """Inside is below the root by whole names: a neighbour whose name begins with
    the root's (``ManagedRepository2``) is outside, and so is the root itself."""
    from openhcs_omero_lib.omero.repository import DirectReadRefused, open_inside, resolve_inside

    root = tmp_path / "ManagedRepository"
    (root / "u").mkdir(parents=True)
    neighbour = tmp_path / "ManagedRepository2"
    neighbour.mkdir()
    (neighbour / "x.TIF").write_bytes(b"II*\0")
    (root / "u" / "x.TIF").symlink_to(neighbour / "x.TIF")
    (root / "u" / "up").symlink_to(root)
    (root / "u" / "y.TIF").write_bytes(b"II*\0")
    real = str(root.resolve())
    for relative in ("u/x.TIF", "u/up"):
        with pytest.raises(DirectReadRefused, match="leads outside the repository"):
            resolve_inside(real, relative)
    assert resolve_inside(real, "u/y.TIF") == str(root.resolve() / "u" / "y.TIF")
    os.close(open_inside(real, "u/y.TIF"))


def test_a_folders_files_are_indexed_as_its_listing_is(multi_plate, zt_plate, small_plate):
    """The rules a fileset's paths are mapped with are the folder reader's."""
    from openhcs_omero_lib.plates.imagexpress import _scan, index_files

    for folder in (multi_plate.folder, zt_plate.folder, small_plate.folder):
        listed = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
        assert {k: folder / p for k, p in index_files(listed).items()} == _scan(folder)
    # images beside ZStep folders, or at the top beside TimePoint folders, are not the plate's
    assert index_files(["TimePoint_1/P_A01_w1.TIF", "P_A01_w1.TIF"]) == index_files(["TimePoint_1/P_A01_w1.TIF"])
    assert len(index_files(["TimePoint_1/ZStep_1/P_A01_w1.TIF", "TimePoint_1/P_A01_w1.TIF"])) == 1
    with pytest.raises(ValueError, match="two files for well A01"):
        index_files(["P_A01_w1.TIF", "P_A01_w1.tif"], strict=True)


def test_a_mount_is_the_longest_matching_server_folder():
    from openhcs_omero_lib.omero.repository_settings import RepositorySettings

    settings = RepositorySettings(mounts=(("/OMERO", "/mnt/omero"), ("/OMERO/ManagedRepository", "/fast/managed")))
    assert settings.local_root("/OMERO/ManagedRepository") == "/fast/managed"
    assert settings.local_root("/OMERO/Other") == "/mnt/omero/Other"
    assert settings.local_root("/OMEROX/ManagedRepository") == "/OMEROX/ManagedRepository"


def test_a_tiff_is_read_by_its_strips_or_else_by_tifffile(tmp_path):
    """A baseline TIFF (MetaXpress's) is read by its header and one read into the
    array; others (compressed, tiled, big-endian included) the same through tifffile."""
    from openhcs_omero_lib.plates import imagexpress, synthetic
    from openhcs_omero_lib.plates.tiff_plane import baseline_plane, baseline_tiff, read_tiff_plane

    plane = np.arange(64 * 80, dtype=np.uint16).reshape(64, 80) * 7
    layout = synthetic.layout_for(synthetic.SyntheticPlateConfig(wells=1, sites=1, channels=1, size=64))
    metaxpress = imagexpress.write_plane(tmp_path / "mx", layout, "A01", 1, 1, 1, 1, plane[:, :64])
    cases = {"metaxpress": (metaxpress, plane[:, :64], True),
             "big-endian": ({"byteorder": ">"}, plane, True), "strips": ({"rowsperstrip": 8}, plane, True),
             "compressed": ({"compression": "zlib"}, plane, False), "tiled": ({"tile": (16, 16)}, plane, False),
             "int16": ({}, plane.astype(np.int16), True), "float32": ({}, plane.astype(np.float32), True)}
    for name, (how, data, baseline) in cases.items():
        path = how if isinstance(how, Path) else tmp_path / f"{name}.tif"
        if not isinstance(how, Path):
            tifffile.imwrite(path, data, **how)
        with path.open("rb") as f:
            assert (baseline_plane(f.fileno(), data.shape, str(data.dtype)) is not None) == baseline, name
            info = baseline_tiff(f.fileno())  # what a plate folder's check reads of every file
            assert (info is not None) == baseline, name
            if info is not None:
                with tifffile.TiffFile(path) as tif:
                    page = tif.pages[0]
                    assert (info.shape, info.native_dtype, info.offset, info.end) == \
                        (page.shape, str(page.dtype), page.dataoffsets[0],
                         page.dataoffsets[-1] + page.databytecounts[-1]), name
            read = read_tiff_plane(f, data.shape, str(data.dtype))
        assert read.dtype == data.dtype and read.dtype.isnative and np.array_equal(read, data), name
        assert np.array_equal(read, tifffile.imread(path)), name
    with (tmp_path / "plain.tif").open("wb") as f:
        tifffile.imwrite(f, plane)
    with (tmp_path / "plain.tif").open("rb") as f:
        assert baseline_plane(f.fileno(), (64, 64), "uint16") is None  # not this shape: tifffile says why
        with pytest.raises(ValueError, match="not uint16 \\(64, 64\\)"):
            read_tiff_plane(f, (64, 64), "uint16")
        assert baseline_plane(f.fileno(), (64, 80), "int16") is None


def test_a_worker_reading_files_loads_no_omero_client():
    """What a worker imports to read a plate's files (the executor and the direct source,
    unpickling the plate) leaves omero-py's client and model classes unloaded: they
    cost a third of a second of every worker's start, and only a fallback needs them."""
    import subprocess
    import sys

    code = ("import sys, openhcs_omero_lib.execution.executor, openhcs_omero_lib.omero.direct_pixels; "
            "print(sorted(m for m in ('omero.clients', 'omero.gateway') if m in sys.modules), "
            "len([m for m in sys.modules if m.startswith('omero_model_')]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded, model_classes = done.stdout.rsplit(" ", 1)
    assert loaded == "[]" and int(model_classes) < 10, done.stdout  # omero.gateway loads some 350
