"""Reading ahead: the next unit's pixels are fetched while the current one computes.

All reads of a source happen on one background thread, in unit order, one unit ahead
(a source with siblings, as an OMERO source has, gets a lane each, fields in turn);
a unit whose pixels fail to read fails alone, when the pipeline asks for them; an
OMERO store never has two requests in flight (OMERO reuses one reply buffer per
store); and worker processes that end early still clean up after themselves.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time

import numpy as np
import psutil
import pytest

from omero_fixtures import calls_since, gateway
from openhcs_omero_lib.plates.layout import Channel, PlateLayout, SiteUnit, Well
from openhcs_omero_lib.plates.pixels import READ_LANES, PixelSource, SourceSpec, UnitPrefetcher


class RecordingSource(PixelSource):
    """Planes filled with their unit's number; records which thread read what, when."""

    def __init__(self, units: int, fail: tuple[str, int] | None = None, delay: float = 0.0):
        self.layout = PlateLayout(name="REC", rows=8, columns=12,
                                  wells=tuple(Well(1, c) for c in range(1, units + 1)), sites=1,
                                  channels=(Channel(1, "a"), Channel(2, "b")), plane_shape=(4, 4))
        self.fail = fail
        self.delay = delay
        self.reads: list[tuple[int, str, int, float]] = []

    def read_plane(self, well, site, channel, z=1, t=1):
        self.reads.append((threading.get_ident(), well, channel, time.monotonic()))
        time.sleep(self.delay)
        if self.fail == (well, channel):
            raise FileNotFoundError(f"no plane for {well} w{channel}")
        return np.full((4, 4), int(well[1:]) * 10 + channel, dtype=np.uint16)

    def spec(self) -> SourceSpec:
        return SourceSpec("recording")


def test_reads_happen_on_one_other_thread_in_unit_order():
    source = RecordingSource(5)
    units = list(source.layout.units())
    seen = []
    with UnitPrefetcher(source, [1, 2]) as prefetch:
        for unit, read in zip(units, prefetch.readers(units)):
            seen.append((unit.well, int(read(1)[0, 0, 0]), int(read(2)[0, 0, 0])))
    assert seen == [(u.well, int(u.well[1:]) * 10 + 1, int(u.well[1:]) * 10 + 2) for u in units]
    threads = {ident for ident, *_ in source.reads}
    assert len(threads) == 1 and threading.get_ident() not in threads
    assert [(w, c) for _, w, c, _ in source.reads] == [(u.well, c) for u in units for c in (1, 2)]


def test_the_next_unit_is_read_while_the_current_one_computes():
    source = RecordingSource(3, delay=0.01)
    units = list(source.layout.units())
    handed_out = {}
    with UnitPrefetcher(source, [1, 2]) as prefetch:
        for unit, read in zip(units, prefetch.readers(units)):
            handed_out[unit.well] = time.monotonic()
            read(1), read(2)
            time.sleep(0.2)  # "computing": the reader thread is meanwhile on the next unit
    for before, after in zip(units, units[1:]):
        next_read = min(t for _, w, _, t in source.reads if w == after.well)
        assert next_read < handed_out[before.well] + 0.2, "the next unit was not read ahead"


def test_a_unit_that_fails_to_read_fails_alone_and_only_when_asked():
    source = RecordingSource(3, fail=("A02", 2))
    units = list(source.layout.units())
    outcomes = {}
    with UnitPrefetcher(source, [1, 2]) as prefetch:
        for unit, read in zip(units, prefetch.readers(units)):
            first = read(1)  # the channel that reads fine is still there
            try:
                read(2)
                outcomes[unit.well] = "ok"
            except FileNotFoundError as exc:
                outcomes[unit.well] = str(exc)
            assert first.shape == (1, 4, 4)
    assert outcomes == {"A01": "ok", "A02": "no plane for A02 w2", "A03": "ok"}


def test_a_channel_not_prefetched_is_still_read_on_the_reading_thread():
    source = RecordingSource(2)
    units = list(source.layout.units())
    with UnitPrefetcher(source, [1]) as prefetch:
        values = [int(read(2)[0, 0, 0]) for read in prefetch.readers(units)]
    assert values == [12, 22]
    assert len({ident for ident, *_ in source.reads}) == 1


class TwinSource(RecordingSource):
    """A recording source with siblings (as an OMERO source has: one store each);
    every twin records into the same list, tagged with its own name."""

    def __init__(self, units: int, timepoints: int = 1, delay: float = 0.0):
        super().__init__(units, delay=delay)
        self.layout = dataclasses.replace(self.layout, timepoints=timepoints)
        self.name, self.log, self.twins, self.closed = "lane0", [], [], []

    def sibling(self):
        twin = TwinSource.__new__(TwinSource)
        twin.__dict__.update(self.__dict__)
        twin.name = f"lane{len(self.twins) + 1}"
        self.twins.append(twin)
        return twin

    def read_plane(self, well, site, channel, z=1, t=1):
        self.log.append((self.name, threading.get_ident(), well, t, time.monotonic()))
        time.sleep(self.delay)
        return np.full((4, 4), int(well[1:]) * 100 + t * 10 + channel, dtype=np.uint16)

    def close(self):
        self.closed.append(self.name)


def test_fields_take_turns_on_reading_lanes_each_with_its_own_thread_and_source():
    from openhcs_omero_lib.plates.pixels import READ_LANES

    source = TwinSource(5, timepoints=2)
    units = list(source.layout.units())
    with UnitPrefetcher(source, [1, 2]) as prefetch:
        assert prefetch.lanes == READ_LANES == 2
        values = [(int(read(1)[0, 0, 0]), int(read(2)[0, 0, 0])) for read in prefetch.readers(units)]
    assert values == [(int(u.well[1:]) * 100 + u.timepoint * 10 + 1, int(u.well[1:]) * 100 + u.timepoint * 10 + 2)
                      for u in units]
    lane_of = {(well, t): name for name, _, well, t, _ in source.log}
    # a field's timepoints stay on one lane (its store stays on that image); fields alternate
    for unit in units:
        assert lane_of[(unit.well, unit.timepoint)] == lane_of[(unit.well, 1)]
    assert [lane_of[(u.well, 1)] for u in units[::2]] == ["lane0", "lane1", "lane0", "lane1", "lane0"]
    # each lane reads on one thread of its own, none of them the caller's
    threads = {name: {ident for n, ident, *_ in source.log if n == name} for name in ("lane0", "lane1")}
    assert all(len(t) == 1 for t in threads.values())
    assert threads["lane0"] != threads["lane1"] and threading.get_ident() not in threads["lane0"] | threads["lane1"]
    # the prefetcher closes the sibling it opened, never the source it was given
    assert source.closed == ["lane1"]


def test_two_lanes_fetch_the_next_two_units_and_no_more():
    source = TwinSource(4, delay=0.05)
    units = list(source.layout.units())
    with UnitPrefetcher(source, [1]) as prefetch:
        readers = prefetch.readers(units)
        next(readers)(1)
        computing = time.monotonic()
        time.sleep(0.3)  # "computing" the first unit
        list(readers)
    started = {well: t for _, _, well, _, t in source.log}
    # both following units were read while the first computed; the one after them waited
    # until a unit was handed out, so no more than two units are ever held ahead
    assert started["A02"] < computing + 0.3 and started["A03"] < computing + 0.3
    assert started["A04"] >= computing + 0.3


# ---- OMERO: a unit's channels, one request at a time per store ---------------------------------

@pytest.fixture(scope="module")
def server(small_and_multi_server):
    return small_and_multi_server


@pytest.mark.parametrize("which", ["small", "multi"])
def test_omero_read_channels_are_the_stacks_with_the_same_calls(server, which):
    from openhcs_omero_lib.omero.pixels import OmeroPixelSource
    from openhcs_omero_lib.omero.plate import PlateCache, load_plate

    with gateway(server) as conn:
        plate = load_plate(conn, getattr(server, f"{which}_id"), cache=PlateCache())
        layout = plate.layout
        units = list(layout.units())[:3]
        channels = [c.index for c in layout.channels]
        with OmeroPixelSource(conn, plate) as one_by_one:
            expected = {u: {c: one_by_one.read_stack(u, c) for c in channels} for u in units}
        before = collections.Counter(server.calls)
        with OmeroPixelSource(conn, plate) as source:
            got = {u: source.read_channels(u, channels) for u in units}
        delta = calls_since(server, before)
    for unit in units:
        for c in channels:
            assert got[unit][c].dtype.isnative
            assert np.array_equal(got[unit][c], expected[unit][c]), (unit, c)
    op = "RawPixelsStore.getPlane" if layout.z_planes == 1 else "RawPixelsStore.getStack"
    assert delta[op] == len(units) * len(channels)
    assert delta["RawPixelsStore.setPixelsId"] == len({(u.well, u.site) for u in units})
    assert delta["ServiceFactory.createRawPixelsStore"] == delta["RawPixelsStore.close"] == 1


def test_a_run_never_has_two_requests_in_flight_on_one_pixels_store(server, monkeypatch):
    """OMERO's RawPixelsStore hands every read back in one reused buffer: a second
    request in flight on the same store can overwrite the first one's pixels. With
    latency, any such overlap would show; reading ahead uses one store per lane."""
    from openhcs_omero_lib.execution.executor import run_units
    from openhcs_omero_lib.omero.pixels import OmeroPixelSource
    from openhcs_omero_lib.omero.run import pipeline_from_choice, prepare

    monkeypatch.setattr(server, "latency", 0.005)
    with gateway(server) as conn:
        spec = pipeline_from_choice(conn, "nuclei_count", None)
        [(plate, bound)] = prepare(conn, "Plate", [server.small_id], spec)
        before = collections.Counter(server.calls)
        with OmeroPixelSource(conn, plate) as source:
            results = run_units(bound, source, workers=1)
        delta = calls_since(server, before)
    assert [r.error for r in results] == [None] * plate.layout.n_units
    assert delta["RawPixelsStore.getPlane"] == plate.layout.n_units * len(plate.layout.channels)
    assert delta["ServiceFactory.createRawPixelsStore"] == READ_LANES  # the lanes did read at once
    assert delta["RawPixelsStore.overlapping"] == 0


def test_omero_read_channels_reports_a_missing_field_as_the_units_failure(server):
    from openhcs_omero_lib.omero.pixels import OmeroPixelSource
    from openhcs_omero_lib.omero.plate import PlateCache, load_plate

    with gateway(server) as conn:
        plate = load_plate(conn, server.small_id, cache=PlateCache())
        with OmeroPixelSource(conn, plate) as source, UnitPrefetcher(source, [1, 2]) as prefetch:
            [read] = list(prefetch.readers([SiteUnit("H12", 1, 1)]))
            with pytest.raises(FileNotFoundError, match="H12"):
                read(1)


def test_workers_that_end_early_still_remove_their_temporary_folders(server, monkeypatch):
    """Workers skip the interpreter's slow teardown but still run the atexit handlers,
    among them omero-py's, which removes the worker's temporary folder."""
    import omero.util.temp_files

    from openhcs_omero_lib.execution import executor
    from openhcs_omero_lib.execution.executor import run_units

    monkeypatch.setattr(executor, "PARENT_COMPUTES", False)  # workers that compute and end normally
    from openhcs_omero_lib.omero.pixels import OmeroPixelSource
    from openhcs_omero_lib.omero.run import pipeline_from_choice, prepare

    workers: set[int] = set()

    def note_workers(done, total, errors):
        for child in psutil.Process().children(recursive=True):
            try:
                if any("spawn_main" in part for part in child.cmdline()):
                    workers.add(child.pid)
            except psutil.Error:
                pass

    with gateway(server) as conn:
        spec = pipeline_from_choice(conn, "nuclei_count", None)
        [(plate, bound)] = prepare(conn, "Plate", [server.small_id], spec)
        with OmeroPixelSource(conn, plate) as source:
            results = run_units(bound, source, workers=2, progress=note_workers, chunk_size=1)
    assert [r.error for r in results] == [None] * plate.layout.n_units
    assert workers, "no worker process was seen"
    _, alive = psutil.wait_procs([psutil.Process(p) for p in workers if psutil.pid_exists(p)], timeout=10)
    assert alive == []
    userdir = omero.util.temp_files.manager.userdir
    left = sorted(p.name for p in userdir.dirs() if p.name.isdigit() and int(p.name) in workers)
    assert left == [], f"worker temporary folders left in {userdir}: {left}"
