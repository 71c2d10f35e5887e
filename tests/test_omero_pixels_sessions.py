"""Pixels from OMERO and the sessions a run uses.

Planes read through RawPixelsStore are the instrument's planes, bit for bit; one
store per process is reused and closed; z-stacks come in one call per channel; worker
processes join the user's session (no new logins) and leave it open and unchanged.
"""

from __future__ import annotations

import collections
import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from omero_fixtures import calls_since, gateway
from openhcs_omero_lib.plates.pixels import READ_LANES


@pytest.fixture(scope="module")
def server(small_and_multi_server):
    return small_and_multi_server


def _load(conn, plate_id):
    from openhcs_omero_lib.omero.plate import PlateCache, load_plate

    return load_plate(conn, plate_id, cache=PlateCache())


def test_planes_are_the_instruments_planes(server, conn, small_plate):
    from openhcs_omero_lib.omero.pixels import OmeroPixelSource
    from openhcs_omero_lib.plates.imagexpress import ImageXpressSource

    plate = _load(conn, server.small_id)
    layout = plate.layout
    # every channel of every field of the first two wells, field by field
    wanted = [(w.name, s, c.index) for w in layout.wells[:2] for s in range(1, layout.sites + 1)
              for c in layout.channels]
    before = collections.Counter(server.calls)
    read = []
    with OmeroPixelSource(conn, plate) as source, ImageXpressSource(small_plate.folder) as ref:
        for well, site, channel in wanted:
            ours, theirs = source.read_plane(well, site, channel), ref.read_plane(well, site, channel)
            assert ours.dtype == theirs.dtype == np.dtype(layout.dtype)
            assert ours.dtype.isnative
            assert ours.shape == theirs.shape == layout.plane_shape
            assert np.array_equal(ours, theirs), (well, site, channel)
            read.append(theirs)
    # the comparison means something: planes differ, and use both bytes of uint16
    assert any(not np.array_equal(a, b) for a, b in itertools.combinations(read, 2))
    assert max(int(p.max()) for p in read) > 255
    delta = calls_since(server, before)
    assert delta["ServiceFactory.createRawPixelsStore"] == 1
    assert delta["RawPixelsStore.getPlane"] == len(wanted)
    fields = len({(w, s) for w, s, _ in wanted})
    assert delta["RawPixelsStore.setPixelsId"] == fields  # switched once per field, not per plane
    assert delta["RawPixelsStore.close"] == 1
    assert server.open_stateful["RawPixelsStore"] == 0


def test_stacks_are_the_instruments_and_come_in_one_call(server, conn, multi_plate):
    from openhcs_omero_lib.omero.pixels import OmeroPixelSource
    from openhcs_omero_lib.plates.imagexpress import ImageXpressSource
    from openhcs_omero_lib.plates.layout import SiteUnit

    plate = _load(conn, server.multi_id)
    layout = plate.layout
    assert layout.z_planes > 1 and layout.timepoints > 1
    units = [SiteUnit(layout.wells[0].name, 2, 2), SiteUnit(layout.wells[-1].name, 1, 1)]
    before = collections.Counter(server.calls)
    with OmeroPixelSource(conn, plate) as source, ImageXpressSource(multi_plate.folder) as ref:
        for unit in units:
            for c in layout.channels:
                ours, theirs = source.read_stack(unit, c.index), ref.read_stack(unit, c.index)
                assert ours.shape == (layout.z_planes, *layout.plane_shape)
                assert ours.dtype == theirs.dtype and ours.dtype.isnative
                assert np.array_equal(ours, theirs)
                assert not np.array_equal(ours[0], ours[1])  # real z planes, not one repeated
    delta = calls_since(server, before)
    assert delta["RawPixelsStore.getStack"] == len(units) * len(layout.channels)
    assert delta["RawPixelsStore.getPlane"] == 0


def test_a_z_stack_run_reads_one_stack_per_channel_per_field(server, conn):
    from openhcs_omero_lib.execution.executor import run_units
    from openhcs_omero_lib.omero.pixels import OmeroPixelSource
    from openhcs_omero_lib.omero.run import pipeline_from_choice, prepare

    spec = pipeline_from_choice(conn, "nuclei_count", None)
    [(plate, bound)] = prepare(conn, "Plate", [server.multi_id], spec)
    layout = plate.layout
    before = collections.Counter(server.calls)
    with OmeroPixelSource(conn, plate) as source:
        results = run_units(bound, source, workers=1)
    assert [r.error for r in results] == [None] * layout.n_units
    delta = calls_since(server, before)
    assert delta["RawPixelsStore.getStack"] == layout.n_units * len(layout.channels)
    assert delta["RawPixelsStore.getPlane"] == 0
    # one store per reading lane, each switched once per field
    assert delta["ServiceFactory.createRawPixelsStore"] == delta["RawPixelsStore.close"] == READ_LANES
    assert delta["RawPixelsStore.setPixelsId"] == len(layout.wells) * layout.sites  # not once per timepoint


WORKERS = 2


@pytest.fixture(scope="module")
def worker_run(server, small_plate):
    """One full run with worker processes, by a user logged in with a password; the
    user's connection stays open for the tests."""
    from openhcs_omero_lib.execution import executor
    from openhcs_omero_lib.omero.run import pipeline_from_choice, prepare, run_on_plate

    # Spawned workers only: this process would otherwise compute too, and finish a
    # plate this small before they have started.
    with gateway(server) as conn:
        session = server.session_of(conn.c)
        connections = session.connections
        spec = pipeline_from_choice(conn, "nuclei_count", None)
        [(plate, bound)] = prepare(conn, "Plate", [server.small_id], spec)
        before = collections.Counter(server.calls)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(executor, "PARENT_COMPUTES", False)
            run = run_on_plate(conn, plate, bound, workers=WORKERS, attach_to=("plate",), outputs=("csv",),
                               pixel_access="server")  # the stores are what this module tests
        yield SimpleNamespace(conn=conn, session=session, connections_before=connections,
                              delta=calls_since(server, before), run=run, plate=plate)


def test_worker_run_measures_every_field(worker_run, small_plate):
    images = worker_run.run.results.images
    assert (images["error"] == "").all()
    assert len(images) == worker_run.plate.layout.n_units
    assert worker_run.run.report.count() > 0


def test_each_worker_opens_at_most_one_pixels_store_and_closes_it(server, worker_run):
    delta = worker_run.delta
    opened = delta["ServiceFactory.createRawPixelsStore"]
    assert 1 <= opened <= WORKERS * READ_LANES  # stores last a worker's life, not a chunk's
    assert delta["RawPixelsStore.close"] == opened
    assert delta["RawPixelsStore.overlapping"] == 0
    assert delta["RawPixelsStore.getPlane"] == worker_run.plate.layout.n_units * len(worker_run.plate.layout.channels)
    for stateful in ("RawPixelsStore", "RawFileStore", "Table", "Handle"):
        assert server.open_stateful[stateful] == 0, stateful


def test_workers_join_the_users_session_and_leave_it_open(server, worker_run):
    from openhcs_omero_lib.omero import queries as Q
    from openhcs_omero_lib.omero.plate import query_params

    delta = worker_run.delta
    assert delta["sessions.joined"] == WORKERS
    assert delta["sessions.created"] == 0
    assert delta["sessions.closed"] == 0
    session = worker_run.session
    assert not session.closed
    assert session.connections == worker_run.connections_before
    # the user's connection still works
    conn = worker_run.conn
    rows = conn.getQueryService().projection(Q.OBJECT_EXISTS.format(kind="Plate"), query_params(id=server.small_id))
    assert [r[0].getValue() for r in rows] == [server.small_id]
    assert len(_load(conn, server.small_id).layout.wells) == len(worker_run.plate.layout.wells)


def test_planes_too_large_for_one_reply_come_in_row_bands(server, conn, multi_plate, monkeypatch):
    import math

    from openhcs_omero_lib.omero import pixels
    from openhcs_omero_lib.plates.imagexpress import ImageXpressSource
    from openhcs_omero_lib.plates.layout import SiteUnit

    plate = _load(conn, server.multi_id)
    layout = plate.layout
    height, width = layout.plane_shape
    row_bytes = width * np.dtype(layout.dtype).itemsize
    monkeypatch.setattr(pixels, "MAX_REPLY_BYTES", 10 * row_bytes)  # ten rows per reply
    well = layout.wells[1].name
    before = collections.Counter(server.calls)
    with pixels.OmeroPixelSource(conn, plate) as source, ImageXpressSource(multi_plate.folder) as ref:
        ours = source.read_plane(well, 2, 2, 2, 1)
        assert np.array_equal(ours, ref.read_plane(well, 2, 2, 2, 1))
        assert ours.dtype.isnative
        stack = source.read_stack(SiteUnit(well, 1, 2), 1)
        assert np.array_equal(stack, ref.read_stack(SiteUnit(well, 1, 2), 1))
    delta = calls_since(server, before)
    bands = math.ceil(height / 10)
    assert delta["RawPixelsStore.getTile"] == bands * (1 + layout.z_planes)
    assert delta["RawPixelsStore.getPlane"] == delta["RawPixelsStore.getStack"] == 0
