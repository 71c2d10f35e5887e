"""The executor: identical results for any number of workers, failing units as data,
progress reports, and Ctrl-C that stops every worker and writes nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from omero_fixtures import as_from_a_shell
from openhcs_omero_lib import engine
from openhcs_omero_lib.execution.executor import run_units
from openhcs_omero_lib.pipeline.loading import parse_spec, preset_text
from openhcs_omero_lib.plates import imagexpress, synthetic
from openhcs_omero_lib.plates.imagexpress import ImageXpressSource
from openhcs_omero_lib.results.sinks import LocalFolderSink


def _spec(name: str = "nuclei_count"):
    return parse_spec(preset_text(name), name)


def test_results_identical_for_one_and_two_workers(small_plate):
    with ImageXpressSource(small_plate.folder) as source:
        one = engine.run_pipeline(source, _spec(), workers=1)
        two = engine.run_pipeline(source, _spec(), workers=2)
    assert len(one.images) == small_plate.config.wells * small_plate.config.sites
    assert (one.images["error"] == "").all()
    assert one.images["nuclei_count"].sum() > 0
    pd.testing.assert_frame_equal(one.images, two.images, check_exact=True)
    pd.testing.assert_frame_equal(one.wells, two.wells, check_exact=True)
    assert one.summary["workers"] == 1 and two.summary["workers"] == 2


@pytest.mark.parametrize("who", ["workers only", "workers started at once", "three workers"])
def test_results_identical_whoever_computes(small_plate, monkeypatch, who):
    """This process computing with spawned workers joining, or spawned workers alone:
    the same rows in the same order."""
    from openhcs_omero_lib.execution import executor

    workers = 3 if who == "three workers" else 2
    if who == "workers only":
        monkeypatch.setattr(executor, "PARENT_COMPUTES", False)
    else:
        monkeypatch.setattr(executor, "WORKER_START_SECONDS", 0.0)  # worth starting after one unit
    opened = []
    real_pool = executor.ProcessPoolExecutor

    def counting_pool(*args, **kwargs):
        opened.append(kwargs["max_workers"])
        return real_pool(*args, **kwargs)

    monkeypatch.setattr(executor, "ProcessPoolExecutor", counting_pool)
    with ImageXpressSource(small_plate.folder) as source:
        one = engine.run_pipeline(source, _spec(), workers=1)
        assert opened == []
        many = engine.run_pipeline(source, _spec(), workers=workers)
    assert opened == [workers if who == "workers only" else workers - 1]
    pd.testing.assert_frame_equal(one.images, many.images, check_exact=True)
    pd.testing.assert_frame_equal(one.wells, many.wells, check_exact=True)


class _NoWorkerSource(ImageXpressSource):
    """A source that worker processes cannot open (its spec names no known kind).
    Spawned: a forked worker would be handed this process's source, not its spec."""

    fork_safe = False

    def spec(self):
        from openhcs_omero_lib.plates.pixels import SourceSpec

        return SourceSpec("no-such-source")


def test_workers_that_cannot_start_leave_the_work_to_this_process(small_plate, monkeypatch, capfd):
    from openhcs_omero_lib.execution import executor

    monkeypatch.setattr(executor, "WORKER_START_SECONDS", 0.0)  # start them after the first unit
    with ImageXpressSource(small_plate.folder) as source:
        spec = engine.bind(_spec(), source.layout)
        expected = run_units(spec, source, workers=1)

    def slowly(done, total, errors):
        time.sleep(0.4)  # still busy here when the worker's failure comes back

    with _NoWorkerSource(small_plate.folder) as source:
        got = run_units(spec, source, workers=2, progress=slowly)
        # a worker failure is one line on stderr and every unit is still computed, once
        assert "a worker process failed" in capfd.readouterr().err
        assert [(r.unit, r.measurements, r.error) for r in got] == \
            [(r.unit, r.measurements, r.error) for r in expected]
        # with no one computing here, the same failure fails the run
        monkeypatch.setattr(executor, "PARENT_COMPUTES", False)
        with pytest.raises(Exception, match="process pool|terminated"):
            run_units(spec, source, workers=2)


def test_a_worker_that_dies_mid_run_loses_no_unit(tmp_path, monkeypatch, capfd):
    """A worker killed while it holds chunks (say, by the kernel for memory): its
    chunks go back to the queue and this process computes them."""
    from omero_fixtures import write_fake_imagexpress
    from openhcs_omero_lib.execution import executor

    folder = tmp_path / "plate"
    # heavy enough (noise: many objects) that the run outlasts a spawned worker's start
    # by a second or more (with spawned workers, 2.5 s against 1.4 s for 24 wells)
    write_fake_imagexpress(folder, wells=48, sites=4, channels=2, size=384, name="DIE")
    monkeypatch.setattr(executor, "WORKER_START_SECONDS", 0.0)
    with ImageXpressSource(folder) as source:
        spec = engine.bind(_spec(), source.layout)
        expected = run_units(spec, source, workers=1)
        killed = []
        me = psutil.Process()

        def kill_a_busy_worker(done, total, errors):
            for worker in _workers(me):
                # a spawned worker computes its chunks about half a second after its
                # start (it imports first); a forked one at once
                busy_after = 1.0 if worker.cmdline() != me.cmdline() else 0.3
                if not killed and time.time() - worker.create_time() > busy_after:
                    worker.kill()
                    killed.append(worker.pid)

        got = run_units(spec, source, workers=2, progress=kill_a_busy_worker)
    assert killed, "no worker was running to be killed"
    assert [(r.unit, r.measurements, r.error) for r in got] == \
        [(r.unit, r.measurements, r.error) for r in expected]
    assert "a worker process failed" in capfd.readouterr().err


def test_workers_start_only_when_the_work_left_outlasts_their_start_up():
    from openhcs_omero_lib.execution.executor import WORKER_START_SECONDS, _SharedRun
    from openhcs_omero_lib.plates.layout import SiteUnit

    run = _SharedRun([SiteUnit("A01", s, 1) for s in range(1, 102)], 4, None, helpers=1)
    run.todo.popleft()  # this process took one unit
    pace = WORKER_START_SECONDS / 50  # 100 units left: twice a start-up's worth of work
    assert run._worth_helpers(done_here=1, seconds_here=pace)
    assert not run._worth_helpers(done_here=1, seconds_here=pace / 4)  # half a start-up left
    assert not run._worth_helpers(done_here=10, seconds_here=pace * 4)  # 0.8 of a start-up left
    assert not run._worth_helpers(done_here=1, seconds_here=pace, margin=3.0)  # not a clear case
    assert run._worth_helpers(done_here=1, seconds_here=pace * 2, margin=3.0)  # four start-ups' worth


class _SpawnedWorkersSource(ImageXpressSource):
    """Workers spawned, as for an OMERO plate (whose script runs Ice's threads)."""

    fork_safe = False


@pytest.mark.parametrize("threshold, before_any_unit", [(0, True), (10**12, False)])
def test_spawned_workers_of_a_large_plate_start_with_the_run(small_plate, monkeypatch, threshold,
                                                              before_any_unit):
    """A plate of more pixels than PIXELS_WORTH_WORKERS starts its spawned workers
    before its first field; a smaller one once its pace says they are worth it."""
    from openhcs_omero_lib.execution import executor

    monkeypatch.setattr(executor, "PIXELS_WORTH_WORKERS", threshold)
    monkeypatch.setattr(executor, "WORKER_START_SECONDS", 0.0)  # the small plate's pace: worth it too
    done_at_start: list[int] = []
    start = executor._SharedRun.start_helpers

    def start_helpers(self):
        done_at_start.append(len(self.results))
        return start(self)

    monkeypatch.setattr(executor._SharedRun, "start_helpers", start_helpers)
    with _SpawnedWorkersSource(small_plate.folder) as source:
        spec = engine.bind(_spec(), source.layout)
        expected = run_units(spec, source, workers=1)
        got = run_units(spec, source, workers=2)
    assert len(done_at_start) == 1 and (done_at_start[0] == 0) == before_any_unit, done_at_start
    assert [(r.unit, r.measurements, r.error) for r in got] == [(r.unit, r.measurements, r.error) for r in expected]


def test_a_pool_that_breaks_before_any_future_says_so_hands_the_work_back(capfd):
    """A worker killed between the wait for results and the next hand-out: the pool
    refuses ``submit`` itself. The chunk goes back to the queue for this process."""
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    from openhcs_omero_lib.execution.executor import _SharedRun
    from openhcs_omero_lib.plates.layout import SiteUnit

    class PoolThatBreaks:
        def submit(self, fn, *args):
            if args:  # a chunk of units, after the workers said they were ready
                raise BrokenProcessPool("A child process terminated abruptly")
            ready = Future()
            ready.set_result(4242)
            return ready

    units = [SiteUnit("A01", s, 1) for s in range(1, 21)]
    run = _SharedRun(units, 4, None, helpers=1, open_pool=PoolThatBreaks)
    run.start_helpers()
    run.collect(timeout=1)
    assert list(run.todo) == list(enumerate(units)), "a unit was lost or reordered"
    assert run.broken and run.broken.startswith("BrokenProcessPool") and not run.running
    run.collect(timeout=0)  # nothing more is handed out once the pool is broken
    assert not run.running and len(run.todo) == len(units)
    assert "a worker process failed" in capfd.readouterr().err


def test_a_starting_worker_finds_its_first_chunk_waiting():
    """Each worker's first chunk is queued behind its start: a worker that becomes
    ready while this process is inside a long unit of its own starts on it at once
    (units are otherwise handed out between this process's units). More follow once
    workers are ready, two waiting for each."""
    from concurrent.futures import Future

    from openhcs_omero_lib.execution.executor import _SharedRun
    from openhcs_omero_lib.plates.layout import SiteUnit

    submitted: list[tuple[str, Future]] = []

    class Pool:
        def submit(self, fn, *args):
            submitted.append((fn.__name__, Future()))
            return submitted[-1][1]

    units = [SiteUnit("A01", s, 1) for s in range(1, 41)]
    run = _SharedRun(units, 4, None, helpers=2, open_pool=Pool)
    run.start_helpers()
    assert [name for name, _ in submitted] == ["_ready", "_ready", "_run_chunk", "_run_chunk"]
    handed = [u for chunk in run.running.values() for u in chunk]
    assert handed + list(run.todo) == list(enumerate(units))
    run.collect(timeout=0)
    assert len(submitted) == 4  # nobody is ready yet: nothing more
    submitted[0][1].set_result(4242)
    run.collect(timeout=0)
    assert len(submitted) == 4  # one ready: two chunks wait for it already
    submitted[1][1].set_result(4243)
    run.collect(timeout=0)
    assert [name for name, _ in submitted[4:]] == ["_run_chunk", "_run_chunk"]  # two per ready worker


def test_spawned_workers_do_not_run_the_main_program_again(tmp_path):
    """A script that starts workers: each new interpreter imports the executor, not
    the script (which, on OMERO, imports omero.scripts and every model class)."""
    marks = tmp_path / "imported.txt"
    script = tmp_path / "a_script.py"
    script.write_text(f"""
import os
with open({str(marks)!r}, "a") as f:
    f.write(f"{{os.getpid()}}\\n")

if __name__ == "__main__":
    from concurrent.futures import ProcessPoolExecutor, wait
    from multiprocessing import get_context

    from openhcs_omero_lib.execution.executor import _SharedRun
    from openhcs_omero_lib.plates.layout import SiteUnit

    run = _SharedRun([SiteUnit("A01", 1, 1)], 1, None, helpers=2,
                     open_pool=lambda: ProcessPoolExecutor(2, mp_context=get_context("spawn")))
    run.start_helpers()
    pids = [f.result() for f in wait(run.starting).done]
    run.pool.shutdown()
    print(sorted(pids), os.getpid(), __file__)
""")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    workers, parent, main_file = done.stdout.split(" ", 2)[0], done.stdout.split()[-2], done.stdout.split()[-1]
    assert main_file == str(script)  # the parent's __file__ is back
    assert marks.read_text().split() == [parent], (marks.read_text(), workers)


@pytest.fixture
def broken_plate(small_plate, tmp_path):
    """A copy of the small plate with one TIFF (well A02, site 2, channel 2) deleted."""
    copy = tmp_path / "broken"
    shutil.copytree(small_plate.folder, copy)
    victim = ImageXpressSource(copy).path_of("A02", 2, 2)
    victim.unlink()
    return copy


@pytest.mark.parametrize("workers", [1, 2])
def test_failing_unit_becomes_an_error_row(broken_plate, tmp_path, workers):
    calls: list[tuple[int, int, int]] = []
    with ImageXpressSource(broken_plate) as source:
        total = source.layout.n_units
        results = engine.run_pipeline(source, _spec(), workers=workers,
                                      progress=lambda *a: calls.append(a))
    images = results.images
    assert len(images) == total == 8
    failed = images[images["error"] != ""]
    assert len(failed) == 1
    bad = failed.iloc[0]
    assert (bad["well"], bad["site"], bad["timepoint"]) == ("A02", 2, 1)
    assert bad["error"].startswith("FileNotFoundError")
    assert "A02" in bad["error"] and "\n" not in bad["error"]
    assert pd.isna(bad["nuclei_count"])
    ok = images[images["error"] == ""]
    assert ok["nuclei_count"].notna().all() and (ok["nuclei_count"] > 0).all()
    assert ok["nuclei_area_mean"].notna().all()
    assert results.summary["units_failed"] == 1
    assert [(e["well"], e["site"]) for e in results.errors] == [("A02", 2)]

    # Progress: starts at 0, done counts rise, ends at (total, total, errors).
    assert calls[0] == (0, total, 0)
    assert calls[-1] == (total, total, 1)
    dones = [c[0] for c in calls]
    assert all(a < b for a, b in zip(dones, dones[1:])), dones
    assert all(c[1] == total for c in calls)
    errors = [c[2] for c in calls]
    assert errors == sorted(errors)

    # wells.csv as written by the local sink.
    out = tmp_path / "out"
    LocalFolderSink(out).write(results)
    wells = pd.read_csv(out / "wells.csv").set_index("well")
    assert wells.loc["A02", "sites_failed"] == 1
    assert wells.loc["A02", "sites"] == 1
    assert (wells.drop(index="A02")["sites_failed"] == 0).all()
    assert wells.loc["A02", "nuclei_count"] == ok.loc[ok["well"] == "A02", "nuclei_count"].sum()


def test_progress_counts_every_unit_in_process(small_plate):
    calls = []
    with ImageXpressSource(small_plate.folder) as source:
        run_units(engine.bind(_spec(), source.layout), source, workers=1, progress=lambda *a: calls.append(a))
    total = small_plate.config.wells * small_plate.config.sites
    assert calls == [(i, total, 0) for i in range(total + 1)]


@pytest.mark.parametrize("workers", [0, -1])
def test_workers_below_one_is_an_error(small_plate, workers):
    with ImageXpressSource(small_plate.folder) as source:
        spec = engine.bind(_spec(), source.layout)
        with pytest.raises(ValueError, match="workers"):
            run_units(spec, source, workers=workers)
        with pytest.raises(ValueError, match="workers"):
            engine.run_pipeline(source, _spec(), workers=workers)


def test_run_units_subset_keeps_order(small_plate):
    with ImageXpressSource(small_plate.folder) as source:
        spec = engine.bind(_spec(), source.layout)
        units = list(source.layout.units())[::-1][:3]
        results = run_units(spec, source, units=units, workers=1)
    assert [r.unit for r in results] == units
    assert [r.index for r in results] == [0, 1, 2]
    assert all(r.error is None and r.measurements["nuclei_count"] > 0 for r in results)


# ---- the caller's preparation (meanwhile) ------------------------------------------

def _wait_for(condition, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def _in_a_fresh_process(body: str, folder: Path) -> dict:
    """Run ``body`` (which sets ``result``) in a new interpreter, where no other
    thread runs and workers of a local plate are forked, as on the command line.
    This process's threads (other tests' servers) would make them spawned."""
    script = f"""
import json, time
import psutil
from openhcs_omero_lib import engine
from openhcs_omero_lib.execution import executor
from openhcs_omero_lib.execution.executor import run_units
from openhcs_omero_lib.pipeline.loading import parse_spec, preset_text
from openhcs_omero_lib.plates.imagexpress import ImageXpressSource

def wait_for(condition, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()

if __name__ == "__main__":
    source = ImageXpressSource({str(folder)!r})
    spec = engine.bind(parse_spec(preset_text("nuclei_count"), "nuclei_count"), source.layout)
    result = {{"forked": executor._can_fork(source)}}
{textwrap.indent(textwrap.dedent(body), "    ")}
    print(json.dumps(result))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result.pop("forked"), "the workers would not have been forked"
    return result


def test_the_preparation_runs_while_a_forked_worker_computes(small_plate):
    """``meanwhile`` (the caller's own work, a file check say) runs while the forked
    worker computes the first units; the results are those of one worker."""
    result = _in_a_fresh_process("""
        expected = run_units(spec, source, workers=1)
        done, seen = [], []

        def meanwhile():  # returns only once a unit has come back from the worker
            seen.append(wait_for(lambda: bool(done)))

        got = run_units(spec, source, workers=2, meanwhile=meanwhile,
                        progress=lambda d, total, errors: done.append(d) if d else None)
        result["seen"] = seen
        result["same"] = [(r.unit, r.measurements, r.error) for r in got] == \\
            [(r.unit, r.measurements, r.error) for r in expected]
    """, small_plate.folder)
    assert result == {"seen": [True], "same": True}, "no unit was computed while the preparation ran"


def test_a_failing_preparation_stops_the_forked_worker(small_plate):
    """What the preparation raises ends the run while the worker computes: raised to
    the caller, the worker stopped, and no progress shown before it."""
    result = _in_a_fresh_process("""
        calls = []

        def meanwhile():
            wait_for(lambda: psutil.Process().children())  # the worker computes meanwhile
            raise RuntimeError("A01_s1_w1.TIF is truncated")

        try:
            engine.run_pipeline(source, spec, workers=2, meanwhile=meanwhile, progress=lambda *a: calls.append(a))
            result["raised"] = None
        except RuntimeError as exc:
            result["raised"] = str(exc)
        result["calls"] = calls
        result["workers left"] = not wait_for(lambda: not psutil.Process().children(recursive=True), 10)
    """, small_plate.folder)
    assert result == {"raised": "A01_s1_w1.TIF is truncated", "calls": [], "workers left": False}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_preparation_stops_the_run_and_shows_no_progress(small_plate, workers):
    class Refused(Exception):
        pass

    def meanwhile():
        time.sleep(0.3)
        raise Refused("A01_s1_w1.TIF is truncated")

    calls: list[tuple] = []
    before = set(psutil.Process().children(recursive=True))
    with ImageXpressSource(small_plate.folder) as source:
        with pytest.raises(Refused, match="truncated"):
            engine.run_pipeline(source, _spec(), workers=workers, meanwhile=meanwhile,
                                progress=lambda *a: calls.append(a))
    assert calls == []
    assert _wait_for(lambda: not set(psutil.Process().children(recursive=True)) - before, 10)


def test_progress_held_during_the_preparation_starts_at_zero_and_rises(small_plate):
    calls: list[tuple] = []
    with ImageXpressSource(small_plate.folder) as source:
        total = source.layout.n_units
        engine.run_pipeline(source, _spec(), workers=2, meanwhile=lambda: time.sleep(0.3),
                            progress=lambda *a: calls.append(a))
    assert calls[0] == (0, total, 0) and calls[-1] == (total, total, 0)
    dones = [c[0] for c in calls]
    assert all(a < b for a, b in zip(dones, dones[1:])), dones


# ---- Ctrl-C ------------------------------------------------------------------------

def _big_plate(folder: Path) -> Path:
    """96 wells x 4 sites at 512 px (several seconds of work for two workers), made fast:
    four sites are rendered and every well links to them."""
    cfg = synthetic.SyntheticPlateConfig(wells=96, sites=4, channels=1, size=512, name="BIG")
    layout = synthetic.layout_for(cfg)
    folder.mkdir(parents=True)
    imagexpress.write_htd(folder / "BIG.HTD", layout)
    first = {}
    for site in range(1, cfg.sites + 1):
        planes, _ = synthetic.render_site(cfg, "A01", site, 1)
        first[site] = imagexpress.write_plane(folder, layout, "A01", site, 1, 1, 1, planes[(1, 1)])
    for unit in layout.units():
        if unit.well == "A01":
            continue
        target = imagexpress.plane_dir(folder, layout, 1, 1) / imagexpress.image_filename(layout, unit.well,
                                                                                           unit.site, 1)
        try:
            os.link(first[unit.site], target)
        except OSError:
            shutil.copyfile(first[unit.site], target)
    return folder


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("openhcs-omero")
    return [str(script)] if script.exists() else [sys.executable, "-m", "openhcs_omero_lib.cli"]


def _workers(proc: psutil.Process) -> list[psutil.Process]:
    """Worker processes: spawned ones, or forked ones (direct children with the parent's
    command line), not multiprocessing's resource tracker."""
    found = []
    for child in proc.children(recursive=True):
        try:
            cmdline = child.cmdline()
            if any("spawn_main" in part for part in cmdline) or (
                    child.ppid() == proc.pid and cmdline == proc.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    return found


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_workers_and_writes_nothing(tmp_path, sig):
    plate = _big_plate(tmp_path / "big")
    out = tmp_path / "results" / "out"
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc = subprocess.Popen(_cli() + ["run", str(plate), "--workers", "2", "--out", str(out), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env,
                            preexec_fn=as_from_a_shell)
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 60
        while not _workers(parent):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no worker process started"
            time.sleep(0.05)
        time.sleep(1.5)  # the workers are busy now
        assert proc.poll() is None, "the run finished before it could be interrupted"
        children = parent.children(recursive=True)
        assert _workers(parent)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr.splitlines()[-1]
    assert "Traceback" not in stderr
    assert not out.exists()
    if out.parent.exists():  # not even a staging folder is left behind
        assert list(out.parent.iterdir()) == []
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"processes left running: {alive}"
