"""Faults, injected and counted: nothing lost, nothing half-written, nothing left over.

Each case puts a complete set of results on a plate first, then runs again while
something goes wrong: a worker process killed (twice, the second time on the retry),
the session removed and its connections dropped, a server call timing out, an upload
failing, OMERO.tables failing on its last batch, the script itself terminated or
killed, the disk filling under local results. For each it checks, and records as
the suite's figures, that

- the run ends (every case has a deadline) and its message says what happened,
- the earlier results are all still there unless a complete new set replaced them
  (``lost``), and the plate never holds a half set,
- no process, local file, server-side object or open service is left over
  (``orphaned``): what the run created belongs to a complete set, or was removed.

Scripts run as OMERO's Processor runs them (:class:`~openhcs_omero_lib.testing.processor.JobProcess`)
so that they can be signalled mid-run; the other cases use the real ``main`` or the
script's own function, whichever lets the fault be injected.
"""

from __future__ import annotations

import collections
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from omero_fixtures import (
    BULK_NS,
    NS_PREFIX,
    RUN_SCRIPT,
    created_since,
    plate_members,
    snapshot,
    standin,
    write_fake_imagexpress,
)
from reliability import record

STATEFUL = ("RawFileStore", "RawPixelsStore", "Table", "Handle")


# ---- plates -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from openhcs_omero_lib.plates import synthetic

    folder = tmp_path_factory.mktemp("faults") / "tiny"
    synthetic.make_plate(folder, synthetic.SyntheticPlateConfig(wells=4, sites=2, channels=2, size=64, seed=8,
                                                                name="TINY"))
    return folder


@pytest.fixture(scope="module")
def long_plate(tmp_path_factory) -> Path:
    """96 wells x 2 fields of 64 px: with latency, long enough for workers to start
    and be caught computing."""
    folder = tmp_path_factory.mktemp("faults") / "long"
    write_fake_imagexpress(folder, wells=96, sites=2, channels=2, size=64, name="LONG")
    return folder


# ---- what is on a plate -------------------------------------------------------------------------

def result_set(store, plate_id: int) -> dict[int, tuple[str, str]]:
    """The bundle's annotations on the plate, its wells and images: annotation ID ->
    (kind it is on, annotation class)."""
    found = {}
    for kind, ids in plate_members(store, plate_id).items():
        for oid in ids:
            for ann in store.annotations_on(kind, oid):
                ns = ann.getNs().getValue() if ann.getNs() else ""
                description = ann.getDescription().getValue() if ann.getDescription() else ""
                if ns.startswith(NS_PREFIX) or (ns == BULK_NS and description.startswith("openhcs-omero")):
                    found[ann.getId().getValue()] = (kind, type(ann).__name__)
    return found


def shape(results: dict[int, tuple[str, str]]) -> collections.Counter:
    return collections.Counter(results.values())


def leftovers(store, created: dict[str, list[int]], kept: set[int]) -> list[str]:
    """Objects created by a run that belong to no annotation in ``kept`` (the complete
    set now on the plate): a file no kept annotation holds, a link to something
    else, an annotation not kept."""
    files = set()
    for aid in kept:
        ann = store.get("FileAnnotation", aid)
        if ann is not None and ann.getFile() is not None:
            files.add(ann.getFile().getId().getValue())
    odd = []
    for kind, ids in created.items():
        for oid in ids:
            if kind in ("FileAnnotation", "MapAnnotation", "CommentAnnotation", "TagAnnotation"):
                ok = oid in kept
            elif kind.endswith("AnnotationLink"):
                link = store.get(kind, oid)
                ok = link is not None and link.getChild().getId().getValue() in kept
            elif kind in ("OriginalFile", "files", "tables"):
                ok = oid in files
            else:
                ok = False
            if not ok:
                odd.append(f"{kind}:{oid}")
    return odd


class Plate:
    """A plate on a stand-in with a complete earlier set of results."""

    def __init__(self, server, folder: Path, **params):
        from openhcs_omero_lib.omero.script_support import run_pipeline_script

        self.server = server
        self.id = server.import_plate(folder)
        # The faults are injected into RawPixelsStore reads and paced by its latency:
        # the plate is read through it (direct reads have faults of their own, tested
        # in test_omero_direct_reads).
        self.params = {"Data_Type": "Plate", "IDs": [self.id], "Workers": 1, "Attach_To": "Plate and wells",
                       "Pixel_Access": "server", **params}
        with server.gateway() as conn:  # in this process: one worker, no processes of its own
            outcome = run_pipeline_script(conn, {**self.params, "Workers": 1})
        assert outcome.ok, outcome.message
        self.earlier = result_set(server.store, self.id)
        assert self.earlier
        self.before = snapshot(server.store)

    def account(self, request, *, replaced: bool, jobs: tuple = ()) -> tuple[dict, list[str]]:
        """The plate's results now: ``replaced`` says whether a complete new set was
        expected. Records lost and orphaned objects (open services, and processes
        ``jobs`` left in their process group) and returns (results now, leftovers)."""
        store = self.server.store
        now = result_set(store, self.id)
        created = created_since(self.before, snapshot(store))
        if replaced:  # the earlier set is lost if what replaced it is not complete
            kept = set(now) - set(self.earlier)
            lost = 0 if shape({a: now[a] for a in kept}) == shape(self.earlier) else len(self.earlier)
            odd = [f"earlier {a}" for a in set(self.earlier) & set(now)]  # left beside the new set
        else:
            kept, lost, odd = set(), len(set(self.earlier) - set(now)), []
        odd += leftovers(store, created, kept)
        odd += [f"{k} open" for k in STATEFUL for _ in range(self.server.open_stateful[k])]
        odd += [f"a process the script left (pid {job.pid})" for job in jobs for _ in range(job.process.orphans)]
        record(request, lost=lost, orphaned=len(odd))
        return now, odd

    def assert_earlier_intact(self, now: dict, odd: list[str]) -> None:
        assert now == self.earlier, f"results changed: {len(now)} now, {len(self.earlier)} before"
        assert not odd, f"left over: {odd}"

    def assert_replaced(self, now: dict, odd: list[str]) -> None:
        assert not set(now) & set(self.earlier), "earlier results left beside the new ones"
        assert shape(now) == shape(self.earlier), f"a half set: {shape(now)} against {shape(self.earlier)}"
        assert not odd, f"left over: {odd}"


# ---- scripts run as the Processor runs them -------------------------------------------------------

_PARAMS: dict = {}


class Job:
    """Run_HCS_Pipeline started in the background, as OMERO's Processor starts it."""

    def __init__(self, server, params: dict):
        from omero.rtypes import rint, rlist, rlong, rstring

        from openhcs_omero_lib.testing.processor import JobProcess, job_session, parse_text, validate

        text = RUN_SCRIPT.read_text()
        if "params" not in _PARAMS:
            _PARAMS["params"] = parse_text(server, RUN_SCRIPT.name, text)
        inputs = {"Data_Type": rstring(params["Data_Type"]), "IDs": rlist([rlong(i) for i in params["IDs"]]),
                  "Workers": rint(params["Workers"]), "Attach_To": rstring(params["Attach_To"])}
        if "Pixel_Access" in params:
            inputs["Pixel_Access"] = rstring(params["Pixel_Access"])
        self.session = job_session(server, server.user)
        errors = validate(_PARAMS["params"], inputs, self.session)
        assert not errors, errors
        self.session.inputs.update(inputs)
        self.server = server
        self.process = JobProcess(server, RUN_SCRIPT.name, text, self.session, None)
        self.pid = self.process.popen.pid

    def workers(self) -> list[psutil.Process]:
        try:
            children = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            return []
        found = []
        for child in children:
            try:
                if any("spawn_main" in part for part in child.cmdline()):
                    found.append(child)
            except psutil.Error:
                pass
        return found

    def running(self) -> bool:
        return self.process.popen.poll() is None

    def wait(self, timeout: float = 240) -> int:
        """The exit code, once the Processor has seen the end and closed the job's
        session (as it does when the job ends)."""
        from openhcs_omero_lib.testing.processor import end_session

        code = self.process.wait(timeout)
        assert code is not None, f"the script ran longer than {timeout} s"
        end_session(self.server, self.session)
        return code

    @property
    def message(self) -> str:
        from omero.rtypes import unwrap

        return unwrap(self.session.outputs.get("Message")) or ""


def _wait_until(condition, timeout: float, what: str, job: Job | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if job is not None and not job.running():
            raise AssertionError(f"the script ended before {what}: {job.process.stderr[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s")
        time.sleep(0.02)


def _two_cores():
    from openhcs_omero_lib.execution.cores import available_cores

    if available_cores() < 2:
        pytest.skip("the script caps Workers at the cores available: one core starts no worker process")


def _busy_worker(job: Job, server) -> psutil.Process:
    """A worker process that has joined the session and read planes meanwhile."""
    joined = server.calls["sessions.joined"]
    _wait_until(lambda: server.calls["sessions.joined"] > joined and job.workers(), 90, "worker", job)
    planes = server.calls["RawPixelsStore.getPlane"]
    _wait_until(lambda: server.calls["RawPixelsStore.getPlane"] > planes + 30, 60, "reading after the join", job)
    return job.workers()[0]


# ---- the cases ----------------------------------------------------------------------------------

@pytest.mark.reliability("fault", deadline=420)
def test_worker_killed_mid_plate_and_again_on_the_retry(long_plate, request):
    """SIGKILL to a worker while it computes (the kernel's OOM killer, say); then the
    same on the re-run. Each run still measures every field, and the re-run's complete
    set replaces the first."""
    _two_cores()
    with standin() as server:
        plate = Plate(server, long_plate, Workers=2)
        fields = len(plate_members(server.store, plate.id)["Image"])
        for attempt in ("first run", "retry"):
            server.latency = 0.03
            job = Job(server, plate.params)
            planes = server.calls["RawPixelsStore.getPlane"]
            worker = _busy_worker(job, server)
            assert server.calls["RawPixelsStore.getPlane"] - planes < 2 * fields, "the plate was done before the kill"
            worker.kill()
            server.latency = 0  # the rest need not take long
            code = job.wait()
            now, odd = plate.account(request, replaced=True, jobs=(job,))
            assert code == 0, (attempt, job.process.stderr[-3000:])
            message = job.message
            assert f"{fields} fields" in message and "a worker process failed" in message, (attempt, message)
            assert "computed its fields" in message and "failed (see the error column)" not in message, message
            plate.assert_replaced(now, odd)
            plate.earlier, plate.before = now, snapshot(server.store)


@pytest.mark.reliability("fault", deadline=240)
def test_session_removed_and_connection_dropped_mid_run(tiny, request):
    """The server removes the script's session while it reads pixels (an
    administrator, a restart) and drops its connection: the run ends, attaches
    nothing, and says why on the job's stderr (its Message can no longer be set)."""
    import omero

    with standin() as server:
        plate = Plate(server, tiny)
        job_holder = {}

        def remove():
            server.remove_session(job_holder["job"].session)
            return omero.RemovedSessionException(message="session removed by the server")

        server.fail("RawPixelsStore.getPlane", remove, after=5, times=1)
        job = job_holder["job"] = Job(server, plate.params)
        code = job.wait()
        stderr = job.process.stderr
        now, odd = plate.account(request, replaced=False, jobs=(job,))
    assert code != 0
    lines = [line for line in stderr.splitlines() if line.startswith("openhcs-omero:")]
    assert any("the session ended before the run finished" in line for line in lines), stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    plate.assert_earlier_intact(now, odd)


@pytest.mark.reliability("fault", deadline=240)
def test_a_server_call_that_times_out(tiny, tmp_path, monkeypatch, capsys, request):
    """``run --omero-plate`` with an invocation timeout (Ice.Default.InvocationTimeout
    in the client's configuration); the server holds the call linking the results and
    gives up later itself. The client's wait ends, what was saved is removed, and the
    command says the server did not answer in time."""
    import omero

    from openhcs_omero_lib.cli.app import main

    config = tmp_path / "ice.config"
    config.write_text("Ice.Default.InvocationTimeout=1000\n")
    with standin() as server:
        plate = Plate(server, tiny)
        monkeypatch.setenv("ICE_CONFIG", str(config))
        monkeypatch.setenv("OMERO_USER", server.user.name)
        monkeypatch.setenv("OMERO_PASSWORD", server.password)
        for var in ("OMERO_SESSION_KEY", "OMERO_GROUP", "OMERO_HOST", "OMERO_PORT"):
            monkeypatch.delenv(var, raising=False)

        def hold():
            time.sleep(3)
            return omero.InternalException(message="gave up")

        server.fail("IUpdate.saveArray", hold, times=1)
        code = main(["run", "--omero-plate", str(plate.id), "--workers", "1", "--no-progress",
                     "--host", server.host, "--port", str(server.port), "--router", server.router])
        err = capsys.readouterr().err
        time.sleep(3)  # the held call ends on the server
        now, odd = plate.account(request, replaced=False)
    assert code == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("openhcs-omero: error: plate") and "nothing attached" in last, err
    assert "did not answer in time" in last and "InvocationTimeoutException" in last, err
    assert "Traceback" not in err
    plate.assert_earlier_intact(now, odd)


@pytest.mark.reliability("fault", deadline=240)
def test_upload_of_the_third_result_file_fails(tiny, request):
    import omero
    from omero.rtypes import rint, rlist, rlong, rstring

    from openhcs_omero_lib.testing.processor import run_script

    with standin() as server:
        plate = Plate(server, tiny)
        server.fail("RawFileStore.write", omero.InternalException(message="injected: no space on the repository"),
                    after=2, times=1)
        writes = server.calls["RawFileStore.write"]
        run = run_script(server, RUN_SCRIPT, {"Data_Type": rstring("Plate"), "IDs": rlist([rlong(plate.id)]),
                                              "Workers": rint(1), "Attach_To": rstring("Plate and wells")},
                         timeout=180)
        assert server.calls["RawFileStore.write"] - writes >= 3, "the third upload never came"
        now, odd = plate.account(request, replaced=False)
    message = run.output("Message") or ""
    assert message.startswith("Nothing attached: ") and "no space on the repository" in message, message
    assert "\n" not in message and "Traceback" not in run.stderr
    plate.assert_earlier_intact(now, odd)


@pytest.mark.reliability("fault", deadline=240)
def test_omero_tables_fails_on_the_last_batch(tiny, monkeypatch, request):
    """Rows go to OMERO.tables in batches (four rows here, so that there are several);
    the last one fails. Through the script's function, where the batch size can be set."""
    import omero

    from openhcs_omero_lib.omero import annotations
    from openhcs_omero_lib.omero.script_support import run_pipeline_script

    monkeypatch.setattr(annotations, "TABLE_BATCH_ROWS", 4)
    with standin() as server:
        batches = server.calls["Table.addData"]
        plate = Plate(server, tiny)  # its run counts the batches
        batches = server.calls["Table.addData"] - batches
        assert batches >= 2
        server.fail("Table.addData", omero.InternalException(message="injected: tables service stopped"),
                    after=batches - 1, times=1)
        with server.gateway() as conn:
            outcome = run_pipeline_script(conn, plate.params)
        now, odd = plate.account(request, replaced=False)
    assert not outcome.ok and outcome.message.startswith("Nothing attached: "), outcome.message
    assert "tables service stopped" in outcome.message
    plate.assert_earlier_intact(now, odd)


def _stop_mid_run(long_plate, request, sig: int):
    _two_cores()
    with standin() as server:
        plate = Plate(server, long_plate, Workers=2)
        server.latency = 0.03
        job = Job(server, plate.params)
        _busy_worker(job, server)
        family = [psutil.Process(job.pid), *job.workers()]
        os.kill(job.pid, sig)
        code = job.wait(120)
        _, alive = psutil.wait_procs(family, timeout=20)
        for proc in alive:
            proc.kill()
        record(request, orphaned=len(alive))
        now, odd = plate.account(request, replaced=False, jobs=(job,))
        message = job.message
    assert not alive, f"processes left running: {alive}"
    plate.assert_earlier_intact(now, odd)
    return code, message, job


@pytest.mark.reliability("fault", deadline=300)
def test_sigterm_of_the_script(long_plate, request):
    """What OMERO's cancel does: the workers stop, nothing is attached, and the
    Message says the run stopped."""
    code, message, job = _stop_mid_run(long_plate, request, signal.SIGTERM)
    assert message.startswith("stopped during plate") and "nothing attached" in message, \
        (message, job.process.stderr[-2000:])


@pytest.mark.reliability("fault", deadline=300)
def test_sigkill_of_the_script(long_plate, request):
    """What nothing can catch: the script is gone at once, its workers follow it
    within a second, and the Processor's closing the job's session releases what it
    had open on the server."""
    code, message, job = _stop_mid_run(long_plate, request, signal.SIGKILL)
    assert code == -signal.SIGKILL and message == ""


@pytest.mark.reliability("fault", deadline=240)
def test_sigkill_of_the_script_while_it_attaches(tiny, request):
    """Killed while the server saves its results' links, which it then completes: the
    plate shows the earlier set and the whole new set, never part of one, and the
    next run leaves one set."""
    import threading

    with standin() as server:
        plate = Plate(server, tiny)
        holding = threading.Event()

        def hold():
            holding.set()
            time.sleep(2)  # the script is killed meanwhile; the server goes on

        server.fail("IUpdate.saveArray", hold, times=1)
        job = Job(server, plate.params)
        _wait_until(holding.is_set, 120, "the links being saved", job)
        os.kill(job.pid, signal.SIGKILL)
        code = job.wait(60)
        time.sleep(2.5)
        store = server.store
        now = result_set(store, plate.id)
        new = {a: v for a, v in now.items() if a not in plate.earlier}
        created = created_since(plate.before, snapshot(store))
        odd = leftovers(store, created, set(new))
        odd += [f"{k} open" for k in STATEFUL for _ in range(server.open_stateful[k])]
        odd += [f"a process the script left (pid {job.pid})" for _ in range(job.process.orphans)]
        lost = len(set(plate.earlier) - set(now))
        record(request, lost=lost, orphaned=len(odd))
        assert code == -signal.SIGKILL
        assert lost == 0 and not odd, (lost, odd)
        assert shape(new) == shape(plate.earlier), f"a half set: {shape(new)} against {shape(plate.earlier)}"
        # the next run leaves exactly one set
        from openhcs_omero_lib.omero.script_support import run_pipeline_script

        with server.gateway() as conn:
            outcome = run_pipeline_script(conn, plate.params)
        after = result_set(store, plate.id)
    assert outcome.ok, outcome.message
    assert not set(after) & set(now) and shape(after) == shape(plate.earlier)


@pytest.mark.reliability("fault", deadline=240)
def test_disk_fills_while_writing_local_results(tiny, tmp_path, request):
    """``run`` on a folder whose earlier results are in ``--out``; the file-size limit
    (RLIMIT_FSIZE, the OS refusing a write as a full disk does) stops the second
    file. The earlier files stay as they were and nothing else is left."""
    out = tmp_path / "out"
    cli = [sys.executable, "-m", "openhcs_omero_lib.cli.app", "run", str(tiny), "--workers", "1", "--out", str(out),
           "--no-progress"]
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    first = subprocess.run(cli, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert first.returncode == 0, first.stderr
    earlier = {p.name: p.read_bytes() for p in out.iterdir()}
    sizes = sorted(len(data) for data in earlier.values())
    limit = sizes[0] + 1  # the smallest file fits, the larger ones do not

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    listing = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    second = subprocess.run(cli, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
                            preexec_fn=limited)
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    extra = sorted(set(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) - set(listing))
    record(request, lost=sum(after.get(name) != data for name, data in earlier.items()), orphaned=len(extra))
    assert second.returncode == 1, second.stderr
    last = second.stderr.strip().splitlines()[-1]
    assert last == f"openhcs-omero: error: cannot write results to {out}: File too large; nothing written", last
    assert "Traceback" not in second.stderr
    assert after == earlier
    assert not extra, f"left behind: {extra}"
