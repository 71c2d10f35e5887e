"""The same pipeline on a Dask cluster: a LocalCluster of two worker processes runs the
local-folder path and the OMERO path (the stand-in) and gives the rows the worker
processes give; a failing unit is an error row; a worker killed mid-chunk costs no
unit; a chunk that kills two workers becomes error rows and the run finishes; a
cancel (in Python, Ctrl-C, SIGTERM) leaves nothing running or open."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from omero_fixtures import (
    RUN_SCRIPT,
    as_from_a_shell,
    calls_since,
    csv_rows,
    file_name,
    gateway,
    write_fake_imagexpress,
)
from openhcs_omero_lib import engine
from openhcs_omero_lib.execution.backend import ProcessPool
from openhcs_omero_lib.execution.executor import Cancelled
from openhcs_omero_lib.execution.settings import DaskSettings
from openhcs_omero_lib.pipeline.loading import parse_spec, preset_text
from openhcs_omero_lib.plates.imagexpress import ImageXpressSource
from openhcs_omero_lib.plates.pixels import READ_LANES
from test_executor import _big_plate, _cli, _workers

RUN_PREFIX = "openhcs-omero-run-"


def _spec():
    return parse_spec(preset_text("nuclei_count"), "nuclei_count")


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of two single-threaded worker processes, shared by the module;
    tests that kill workers wait for the nanny's replacements before they end."""
    from openhcs_omero_lib.execution.dask_backend import DaskBackend

    backend = DaskBackend.open(DaskSettings(scheduler="local:2"))
    try:
        yield backend
    finally:
        backend.close()


def _ready(backend) -> None:
    backend.client.wait_for_workers(2, timeout=120)


def _rows(results):
    return [(r.unit, r.measurements, r.error) for r in results]


def _run_keys(task_stream) -> list:
    return [t for t in task_stream.data if str(t["key"]).startswith(RUN_PREFIX)]


def _left_on_cluster(backend) -> tuple[list, list]:
    """The run's tasks the scheduler still holds, and its plugins on the workers."""
    def tasks(dask_scheduler):
        return [str(k) for k in dask_scheduler.tasks if str(k).startswith(RUN_PREFIX)]

    def plugins(dask_worker):
        return [n for n in dask_worker.plugins if n.startswith(RUN_PREFIX)]

    return (backend.client.run_on_scheduler(tasks),
            [n for names in backend.client.run(plugins).values() for n in names])


def _cluster_forgets_the_run(backend) -> bool:
    """Released futures leave the scheduler a moment later (its messages are
    asynchronous): wait for that, up to half a minute."""
    deadline = time.monotonic() + 30
    while _left_on_cluster(backend) != ([], []) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _left_on_cluster(backend) == ([], [])


# ---- the local-folder path ---------------------------------------------------------

@pytest.mark.parametrize("plate", ["normal_plate", "multi_plate"])
def test_local_plate_gives_the_worker_processes_rows(cluster, plate, request):
    """Same tables as the multiprocessing executor, both workers computing, chunks of
    several units, progress from completed chunks; z stacks and timepoints too."""
    from distributed import get_task_stream

    folder = request.getfixturevalue(plate).folder
    _ready(cluster)
    calls = []
    with ImageXpressSource(folder) as source:
        processes = engine.run_pipeline(source, _spec(), workers=2)
        with get_task_stream(client=cluster.client) as stream:
            dask = engine.run_pipeline(source, _spec(), backend=cluster, progress=lambda *a: calls.append(a))
        total = source.layout.n_units
    assert (processes.images["error"] == "").all() and processes.images["nuclei_count"].sum() > 0
    pd.testing.assert_frame_equal(processes.images, dask.images, check_exact=True)
    pd.testing.assert_frame_equal(processes.wells, dask.wells, check_exact=True)
    assert dask.summary["executor"] == "dask" and dask.summary["workers"] == 2
    assert processes.summary["executor"] == "processes"
    tasks = _run_keys(stream)
    assert {t["worker"] for t in tasks} == set(cluster.client.nthreads())  # both computed
    assert 2 < len(tasks) <= total  # more chunks than workers
    if total >= 16:  # and units travel several to a chunk (a small plate's go one by one)
        assert len(tasks) < total
    assert calls[0] == (0, total, 0) and calls[-1] == (total, total, 0)
    assert len(calls) == len(tasks) + 1
    dones = [c[0] for c in calls]
    assert all(a < b for a, b in zip(dones, dones[1:]))
    assert _cluster_forgets_the_run(cluster)


def test_a_failing_unit_is_an_error_row(cluster, small_plate, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(small_plate.folder, broken)
    ImageXpressSource(broken).path_of("A02", 2, 2).unlink()
    _ready(cluster)
    with ImageXpressSource(broken) as source:
        processes = engine.run_pipeline(source, _spec(), workers=1)
        dask = engine.run_pipeline(source, _spec(), backend=cluster)
    failed = dask.images[dask.images["error"] != ""]
    assert [(r.well, r.site) for r in failed.itertuples()] == [("A02", 2)]
    assert failed.iloc[0]["error"].startswith("FileNotFoundError") and "A02" in failed.iloc[0]["error"]
    pd.testing.assert_frame_equal(processes.images, dask.images, check_exact=True)
    assert dask.summary["units_failed"] == 1


@pytest.fixture(scope="module")
def fault_plate(tmp_path_factory) -> Path:
    """96 fields of 384 px: long enough for workers to be caught computing."""
    folder = tmp_path_factory.mktemp("dask-faults") / "plate"
    write_fake_imagexpress(folder, wells=24, sites=4, channels=2, size=384, name="FAULTS")
    return folder


@pytest.fixture(scope="module")
def fault_reference(fault_plate):
    with ImageXpressSource(fault_plate) as source:
        spec = engine.bind(_spec(), source.layout)
        return spec, ProcessPool(2).run_units(spec, source)


def test_a_worker_killed_mid_chunk_costs_no_unit(cluster, fault_plate, fault_reference):
    """SIGKILL a worker while it computes (the kernel's OOM killer): the scheduler
    gives its chunks to the other worker, the nanny starts a new one, every unit is
    computed once and the rows are the reference's."""
    spec, expected = fault_reference
    _ready(cluster)
    client = cluster.client
    killed = []

    def kill_a_busy_worker(done, total, errors):
        if killed or done == 0:
            return
        busy = sorted(addr for addr, keys in client.processing().items()
                      if any(str(k).startswith(RUN_PREFIX) for k in keys))
        pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
        os.kill(pid, signal.SIGKILL)
        killed.append(busy[0])

    with ImageXpressSource(fault_plate) as source:
        got = cluster.run_units(spec, source, progress=kill_a_busy_worker)
    assert killed, "no worker was computing"
    assert killed[0] not in client.nthreads()  # it died; the nanny's replacement has another address
    assert _rows(got) == _rows(expected)
    _ready(cluster)


def test_a_chunk_that_kills_two_workers_becomes_error_rows(cluster, fault_plate, fault_reference):
    """The first chunk loses its worker, is retried once elsewhere, loses that one too:
    its fields are error rows (as a field that runs out of memory everywhere would be),
    and the run still finishes with every other field computed."""
    from openhcs_omero_lib.execution.dask_backend import KILLED

    spec, expected = fault_reference
    _ready(cluster)
    client = cluster.client
    kills: list[str] = []
    notes: list[str] = []
    stop = threading.Event()

    def kill_whoever_holds_the_first_chunk():
        while not stop.is_set() and len(kills) < 2:
            holders = [addr for addr, keys in client.processing().items()
                       if addr not in kills and any(str(k).startswith(RUN_PREFIX) and str(k).endswith("-0")
                                                    for k in keys)]
            if holders:
                pid = client.run(os.getpid, workers=[holders[0]])[holders[0]]
                os.kill(pid, signal.SIGKILL)
                kills.append(holders[0])
            time.sleep(0.01)

    killer = threading.Thread(target=kill_whoever_holds_the_first_chunk, daemon=True)
    killer.start()
    try:
        with ImageXpressSource(fault_plate) as source:
            got = cluster.run_units(spec, source, notes=notes)
    finally:
        stop.set()
        killer.join()
    assert len(kills) == 2
    assert len(got) == len(expected) and [r.index for r in got] == list(range(len(expected)))
    assert got[0].error == KILLED and got[0].measurements == {}
    failed = [r for r in got if r.error is not None]
    assert {r.error for r in failed} == {KILLED}
    assert len(failed) < len(got) // 2
    assert notes == [f"{len(failed)} field(s) lost two Dask workers each (out of memory?) and were not measured"]
    assert [row for row in _rows(got) if row[2] is None] == \
        [row for row, r in zip(_rows(expected), got) if r.error is None]
    _ready(cluster)


# ---- the OMERO path ----------------------------------------------------------------

@pytest.fixture(scope="module")
def server(small_and_multi_server):
    return small_and_multi_server


def _prepared(conn, plate_id):
    from openhcs_omero_lib.omero.run import pipeline_from_choice, prepare

    [(plate, bound)] = prepare(conn, "Plate", [plate_id], pipeline_from_choice(conn, "nuclei_count", None))
    return plate, bound


@pytest.mark.parametrize("which", ["small_id", "multi_id"])
def test_omero_plate_gives_the_worker_processes_rows(cluster, server, which, caplog):
    """Workers join the user's session by key, once per worker and run (not per
    chunk), read through their own stores, close them when the run ends and leave the
    session open; the key appears in no log of the client, the scheduler or a worker."""
    import logging

    from distributed import get_task_stream

    from openhcs_omero_lib.omero.connection import session_key
    from openhcs_omero_lib.omero.run import run_on_plate

    _ready(cluster)
    caplog.set_level(logging.DEBUG)
    with gateway(server) as conn:
        session = server.session_of(conn.c)
        plate, bound = _prepared(conn, getattr(server, which))
        processes = run_on_plate(conn, plate, bound, workers=2, attach_to=("plate",), outputs=("csv",),
                                 pixel_access="server")
        before = collections.Counter(server.calls)
        with get_task_stream(client=cluster.client) as stream:
            dask = run_on_plate(conn, plate, bound, backend=cluster, attach_to=("plate",), outputs=("csv",),
                                pixel_access="server")
        delta = calls_since(server, before)
        key = session_key(conn)
        assert not session.closed
    pd.testing.assert_frame_equal(processes.results.images, dask.results.images, check_exact=True)
    assert (dask.results.images["error"] == "").all()
    assert dask.results.summary["executor"] == "dask"
    computed_on = {t["worker"] for t in _run_keys(stream)}
    assert len(_run_keys(stream)) > len(computed_on)  # more chunks than joins
    assert delta["sessions.joined"] == len(computed_on)
    assert delta["sessions.created"] == delta["sessions.closed"] == 0
    opened = delta["ServiceFactory.createRawPixelsStore"]
    assert 1 <= opened <= len(computed_on) * READ_LANES
    assert delta["RawPixelsStore.close"] == opened and server.open_stateful["RawPixelsStore"] == 0
    assert delta["RawPixelsStore.overlapping"] == 0
    # omero-py's own DEBUG lines of the user's connection name its session (that is
    # the connection's business); nothing that Dask or this package logs may.
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith("omero")]
    logs = ours + [str(cluster.client.get_scheduler_logs(n=10000)), str(cluster.client.get_worker_logs(n=10000))]
    assert [text for text in logs if key in text] == []


def test_dask_workers_read_the_managed_repositorys_files_without_a_session(cluster, server):
    """Pixel_Access auto on the cluster: the workers open the plate's files, join no
    session and read no plane through RawPixelsStore beyond the one per channel that
    was checked; the rows are those read through RawPixelsStore."""
    from openhcs_omero_lib.omero.run import run_on_plate

    _ready(cluster)
    with gateway(server) as conn:
        plate, bound = _prepared(conn, server.small_id)
        through_server = run_on_plate(conn, plate, bound, workers=1, attach_to=("plate",), outputs=("csv",),
                                      pixel_access="server")
        before = collections.Counter(server.calls)
        direct = run_on_plate(conn, plate, bound, backend=cluster, attach_to=("plate",), outputs=("csv",))
        delta = calls_since(server, before)
    pd.testing.assert_frame_equal(through_server.results.images, direct.results.images, check_exact=True)
    assert direct.access.path == "direct" and direct.results.summary["executor"] == "dask"
    assert delta["sessions.joined"] == 0
    assert delta["RawPixelsStore.getPlane"] == len(plate.layout.channels)


def test_cancel_releases_the_workers_stores_and_the_clusters_tasks(cluster, server):
    """A cancel (the job's status polled by the progress thread, or SIGTERM) raises out
    of the run: outstanding chunks are cancelled, every worker's source is closed (no
    store left open on the server), the user's session stays."""
    from openhcs_omero_lib.omero.pixels import OmeroPixelSource

    _ready(cluster)
    with gateway(server) as conn:
        session = server.session_of(conn.c)
        plate, bound = _prepared(conn, server.multi_id)
        seen = []

        def cancel_after_the_first_chunk(done, total, errors):
            seen.append(done)
            if done:
                raise Cancelled("the job was cancelled")

        with OmeroPixelSource(conn, plate) as source, pytest.raises(Cancelled):
            cluster.run_units(bound, source, progress=cancel_after_the_first_chunk)
        assert 0 < seen[-1] < plate.layout.n_units
        assert server.open_stateful["RawPixelsStore"] == 0
        assert not session.closed
    assert _cluster_forgets_the_run(cluster)


def test_the_script_sends_units_to_the_cluster_its_server_settings_name(server, tmp_path, monkeypatch):
    """Run_HCS_Pipeline as the Processor runs it, with OMERODIR (passed on by the
    Processor) holding openhcs-omero.yaml: a local Dask cluster computes and the
    attached rows are the worker processes' rows."""
    from omero.rtypes import rbool, rint, rlist, rlong, rstring

    from openhcs_omero_lib.testing.processor import run_script

    settings = tmp_path / "OMERO.server" / "etc" / "openhcs-omero.yaml"
    settings.parent.mkdir(parents=True)
    inputs = {"Data_Type": rstring("Plate"), "IDs": rlist([rlong(server.small_id)]), "Workers": rint(2),
              "Attach_To": rstring("Plate"), "CSV": rbool(True), "Heat_Map": rbool(False)}

    def images_csv():
        [ann] = [a for a in server.store.annotations_on("Plate", server.small_id, "openhcs.omero/results/nuclei_count")
                 if file_name(server.store, a) == "nuclei_count_images.csv"]
        return csv_rows(server.store, ann)

    plain = run_script(server, RUN_SCRIPT, inputs)
    assert plain.returncode == 0 and "with 2 workers" in plain.output("Message"), plain.stderr[-2000:]
    expected = images_csv()
    settings.write_text("dask:\n  scheduler: local:2\n")
    monkeypatch.setenv("OMERODIR", str(settings.parents[1]))
    on_dask = run_script(server, RUN_SCRIPT, inputs)
    assert on_dask.returncode == 0 and on_dask.errors == [], on_dask.stderr[-3000:]
    assert "with a local Dask cluster of 2 workers" in on_dask.output("Message")
    assert "Traceback" not in on_dask.stderr, on_dask.stderr[-3000:]
    assert images_csv() == expected


# ---- the command line --------------------------------------------------------------

def test_cli_dask_address_uses_that_cluster_and_leaves_it_running(cluster, small_plate, tmp_path):
    import json

    from openhcs_omero_lib.cli.app import main

    _ready(cluster)
    address = cluster.client.scheduler.address
    assert main(["run", str(small_plate.folder), "--workers", "1", "--out", str(tmp_path / "p"),
                 "--no-progress", "--no-heatmap"]) == 0
    assert main(["run", str(small_plate.folder), "--dask", address, "--out", str(tmp_path / "d"),
                 "--no-progress", "--no-heatmap"]) == 0
    summary = json.loads((tmp_path / "d" / "results.json").read_text())
    assert (summary["executor"], summary["workers"]) == ("dask", 2)
    assert (tmp_path / "d" / "images.csv").read_text() == (tmp_path / "p" / "images.csv").read_text()
    assert len(cluster.client.nthreads()) == 2


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_cli_cancel_stops_the_local_cluster_and_writes_nothing(tmp_path, how):
    """Ctrl-C reaches the whole process group (the workers too, which leave it to the
    run); OMERO's cancel sends SIGTERM to the script's process alone."""
    plate = _big_plate(tmp_path / "big")
    out = tmp_path / "results" / "out"
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc = subprocess.Popen(_cli() + ["run", str(plate), "--dask", "local:2", "--out", str(out), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env,
                            start_new_session=True, preexec_fn=as_from_a_shell)
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 120
        while len(_workers(parent)) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no Dask worker started"
            time.sleep(0.05)
        time.sleep(4)  # the workers have joined and are computing
        assert proc.poll() is None, "the run finished before it could be interrupted"
        children = parent.children(recursive=True)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, stderr
    assert stderr.splitlines()[-1] == "openhcs-omero: interrupted; workers stopped, no results written"
    assert "Traceback" not in stderr, stderr
    assert not out.exists()
    if out.parent.exists():
        assert list(out.parent.iterdir()) == []
    _, alive = psutil.wait_procs(children, timeout=15)
    assert alive == [], f"processes left running: {alive}"


def test_tls_settings_reach_a_tls_scheduler(small_plate, tmp_path):
    """The tls section (CA, certificate, key files) as the README shows it, against a
    scheduler that accepts TLS only."""
    from distributed import LocalCluster
    from distributed.security import Security

    from openhcs_omero_lib.execution.dask_backend import DaskBackend
    from openhcs_omero_lib.execution.settings import TlsFiles

    made = Security.temporary()  # PEM text, as an administrator's files would hold
    files = {}
    for name, text in (("ca.pem", made.tls_ca_file), ("cert.pem", made.tls_client_cert),
                       ("key.pem", made.tls_client_key)):
        files[name] = tmp_path / name
        files[name].write_text(text)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tls://", security=made,
                      dashboard_address=":0") as tls_cluster:
        assert tls_cluster.scheduler_address.startswith("tls://")
        settings = DaskSettings(scheduler=tls_cluster.scheduler_address,
                                tls=TlsFiles(ca_file=str(files["ca.pem"]), cert=str(files["cert.pem"]),
                                             key=str(files["key.pem"])))
        with DaskBackend.open(settings) as backend, ImageXpressSource(small_plate.folder) as source:
            dask = engine.run_pipeline(source, _spec(), backend=backend)
            processes = engine.run_pipeline(source, _spec(), workers=1)
    pd.testing.assert_frame_equal(processes.images, dask.images, check_exact=True)
