"""Big images whose pyramid the server has not built yet.

A plane larger than the server's pyramid threshold can be read only once its pyramid
is built; until then ``RawPixelsStore.setPixelsId`` raises MissingPyramidException
(omero-romio ``PixelsService``, omero-server ``RawPixelsBean``). A run says so once for
the plate, computes nothing there and attaches nothing to it, instead of recording
one error per field. The stand-in's threshold is lowered here so that small test
plates count as big.
"""

from __future__ import annotations

import collections

import pytest

from omero_fixtures import calls_since, created_since, gateway, snapshot, standin

THRESHOLD = 64 * 64  # the tiny plate's 96 x 96 planes are above it


@pytest.fixture()
def server():
    with standin(pyramid_threshold=THRESHOLD) as server:
        yield server


def _run(server, conn, plate_ids, **params):
    from openhcs_omero_lib.omero.script_support import run_pipeline_script

    params = {"Data_Type": "Plate", "IDs": list(plate_ids), "Workers": 1, **params}
    before, calls = snapshot(server.store), collections.Counter(server.calls)
    outcome = run_pipeline_script(conn, params)
    return outcome, calls_since(server, calls), created_since(before, snapshot(server.store))


def _not_ready(pid, name="TINY") -> str:
    return (f"plate {pid} ({name}): its images are still being prepared by the server "
            "(pyramid not built); try again later")


def _pixels(server, pid) -> list[int]:
    from omero_fixtures import plate_members

    store = server.store
    return sorted(px.getId().getValue() for iid in plate_members(store, pid)["Image"]
                  for px in store.children("Pixels", "image", iid))


def test_reading_waits_for_the_pyramid(server, tiny_plate):
    """The stand-in as the server: MissingPyramidException (with the pixels ID and a
    back-off) until the pyramid is built; the store can be switched again after it."""
    import omero

    pid = server.import_plate(tiny_plate)
    small = _small_pixels(server, tiny_plate)
    big = _pixels(server, pid)[0]
    with gateway(server) as conn:
        store = conn.c.sf.createRawPixelsStore()
        try:
            with pytest.raises(omero.MissingPyramidException) as info:
                store.setPixelsId(big, True)
            assert info.value.pixelsID == big and info.value.backOff > 0
            store.setPixelsId(small, True)  # below the threshold: readable at once
            server.build_pyramids({big})
            store.setPixelsId(big, True)
            assert len(store.getPlane(0, 0, 0)) == 96 * 96 * 2
        finally:
            store.close()


def _small_pixels(server, tiny_plate) -> int:
    """The pixels ID of a plate imported with the threshold above its planes."""
    server.pyramid_threshold = 96 * 96
    try:
        return _pixels(server, server.import_plate(tiny_plate, name="SMALL"))[0]
    finally:
        server.pyramid_threshold = THRESHOLD


def test_a_plate_still_being_prepared_is_not_run(server, tiny_plate):
    pid = server.import_plate(tiny_plate)
    with gateway(server) as conn:
        outcome, calls, created = _run(server, conn, [pid])
        assert not outcome.ok
        assert outcome.message == "Nothing attached: " + _not_ready(pid)
        assert calls["RawPixelsStore.getPlane"] == 0 and created == {}
        assert server.open_stateful["RawPixelsStore"] == 0
        server.build_pyramids()
        outcome, calls, created = _run(server, conn, [pid])
    assert outcome.ok, outcome.message
    assert created["FileAnnotation"]


@pytest.mark.parametrize("workers", [1, 2])
def test_an_image_found_unready_while_running_stops_its_plate_once(server, tiny_plate, small_plate, workers,
                                                                  monkeypatch):
    """Every image but one has its pyramid (the last one, which the check before the
    run looks at, among them): the plate stops with one message, nothing attached to
    it, and the next plate is run and attached."""
    from openhcs_omero_lib.execution import executor

    # With two, only spawned workers compute: the unready image is found in one of them.
    monkeypatch.setattr(executor, "PARENT_COMPUTES", workers == 1)
    late = server.import_plate(tiny_plate)
    ready = server.import_plate(small_plate.folder)
    server.build_pyramids(set(_pixels(server, late)[1:]) | set(_pixels(server, ready)))
    with gateway(server) as conn:
        # RawPixelsStore finds the image unready (its file could be read straight away)
        outcome, calls, created = _run(server, conn, [late, ready], Workers=workers, Pixel_Access="server")
    assert outcome.outcome == "failed", outcome.message
    head, *lines = outcome.message.split("; plate ")
    assert head.endswith("; 1 plate not run"), outcome.message
    assert lines[0] == _not_ready(late)[len("plate "):] + "; nothing attached to it"
    assert lines[1].startswith(f"{ready} (SMALL): 8 fields") and "field(s) failed" not in outcome.message
    assert "MissingPyramidException" not in outcome.message
    assert created and not [a for a in server.store.annotations_on("Plate", late)]
    assert server.store.annotations_on("Plate", ready)
    for stateful in ("RawPixelsStore", "RawFileStore", "Table"):
        assert server.open_stateful[stateful] == 0, stateful


def test_the_command_says_so_once(server, tiny_plate, monkeypatch, capsys):
    from openhcs_omero_lib.cli.app import main

    pid = server.import_plate(tiny_plate)
    monkeypatch.setenv("OMERO_USER", server.user.name)
    monkeypatch.setenv("OMERO_PASSWORD", server.password)
    for var in ("OMERO_SESSION_KEY", "OMERO_GROUP"):
        monkeypatch.delenv(var, raising=False)
    args = ["run", "--omero-plate", str(pid), "--no-progress", "--workers", "1", "--pixel-access", "server",
            "--host", server.host, "--port", str(server.port), "--router", server.router]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"openhcs-omero: error: {_not_ready(pid)}"]
    server.build_pyramids(set(_pixels(server, pid)[1:]))  # the last one is ready, the first not
    assert main(args) == 1
    err = capsys.readouterr().err
    assert _not_ready(pid) + "; nothing attached to it" in err and "Traceback" not in err
    assert server.store.annotations_on("Plate", pid) == []
