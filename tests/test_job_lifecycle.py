"""A script job's life on the server: its session, its process, its results, its messages.

What OMERO does, and the stand-in models (omero-blitz ``omero/cmd/SessionI.java``,
``omero/grid/InteractiveProcessorI.java``, ``ome/services/blitz/impl/ScriptProcessI.java``;
omero-py ``src/omero/processor.py``): a job belongs to the session that started it
until it is detached, and stops when that session ends; it runs in a session of its
own, in the launching session's group, that lives until the job is closed or
``omero.scripts.timeout`` passes; ``getResults`` waits 5 s at most and answers once;
the job's final status is set when its process is polled; the script runs as a file
named ``script`` in a fresh folder, in a process group of its own, with only the
Processor's allow-list of environment variables. These tests hold ``launch``,
``jobs.py`` and the running script to those rules.
"""

from __future__ import annotations

import time

import psutil
import pytest

from omero_fixtures import (
    DESCRIBE_SCRIPT,
    RUN_SCRIPT,
    gateway,
    results_on_plate,
    script_descendants,
    standin,
    use_long_plate,
    wait_for_progress,
    write_fake_imagexpress,
)
from openhcs_omero_lib.cli.app import main
from openhcs_omero_lib.omero import jobs
from openhcs_omero_lib.testing.processor import run_script

# omero-py src/omero/processor.py, ProcessI.make_env: all a script finds in its environment
# (and LC_CTYPE, which Python itself sets when it coerces a C locale, PEP 538).
PROCESSOR_ENVIRONMENT = {"CLASSPATH", "DISPLAY", "DYLD_LIBRARY_PATH", "HOME", "JYTHON_HOME", "LC_ALL", "LANG",
                         "LANGUAGE", "LD_LIBRARY_PATH", "MLABRAW_CMD_STR", "OMERODIR", "OMERO_TEMPDIR",
                         "OMERO_TMPDIR", "PATH", "PYTHONPATH", "OMERO_HOME", "ICE_CONFIG", "LC_CTYPE"}


@pytest.fixture(scope="module")
def long_plate(tmp_path_factory):
    """96 wells x 2 fields of 64 px: with latency, a run that lasts several seconds."""
    folder = tmp_path_factory.mktemp("long") / "plate"
    write_fake_imagexpress(folder, wells=96, sites=2, channels=2, size=64, name="LONG")
    return folder


@pytest.fixture()
def server(tiny_plate, monkeypatch):
    with standin() as server:
        server.plate_id = server.import_plate(tiny_plate)
        server.run_id = server.install_script(RUN_SCRIPT)
        server.describe_id = server.install_script(DESCRIBE_SCRIPT)
        monkeypatch.setenv("OMERO_USER", server.user.name)
        monkeypatch.setenv("OMERO_PASSWORD", server.password)
        for var in ("OMERO_SESSION_KEY", "OMERO_GROUP", "OMERO_HOST", "OMERO_PORT"):
            monkeypatch.delenv(var, raising=False)
        server.args = ["--host", server.host, "--port", str(server.port), "--router", server.router]
        yield server


def _status(server, job_id: int) -> str:
    return server.store.get("ScriptJob", job_id).getStatus().getValue().getValue()


def _run_inputs(conn, plate_id: int, workers: int) -> dict:
    # Read through RawPixelsStore, whose latency paces the run (direct reads finish
    # before the session can be closed under them).
    inputs = jobs.run_inputs([plate_id], workers=workers, pixel_access="server")
    inputs.update(jobs.pipeline_inputs(conn, "nuclei_count"))
    return inputs


def _describe_inputs(plate_id: int) -> dict:
    from omero.rtypes import rlist, rlong, rstring

    return {"Data_Type": rstring("Plate"), "IDs": rlist([rlong(plate_id)])}


# ---- the launching session ------------------------------------------------------------------

def test_a_job_not_detached_stops_when_its_session_ends(server, long_plate):
    """Closing the launching session closes its InteractiveProcessor, which shuts the
    script down (SIGTERM, then SIGKILL of its group) and ends the job's session; the
    script attaches nothing and leaves no worker behind."""
    use_long_plate(server, long_plate)
    server.shutdown_wait = 1.0
    conn = server.gateway()
    job_id, _ = jobs.start_job(conn, server.run_id, _run_inputs(conn, server.plate_id, 2))
    wait_for_progress(conn, job_id)
    workers = script_descendants(server, job_id)
    assert len(workers) >= 2
    conn.close()
    process = server.jobs[job_id]
    assert process.exited(60), "the script is still running"
    gone, alive = psutil.wait_procs(workers, timeout=60)
    assert not alive, "worker processes still running"
    assert process.orphans == 0
    assert process.session.closed
    assert results_on_plate(server) == []
    # The Processor writes the status through the job's session, which is gone.
    assert process.wait(10) is not None and _status(server, job_id) == "Running"


def test_launch_no_wait_detaches_the_job(server, capsys):
    server.processor_check_seconds = 3600  # nobody polls the job: its status stays as the script left it
    assert main(["launch", "--plate", str(server.plate_id), "--workers", "1", "--no-wait", *server.args]) == 0
    job_id = int(capsys.readouterr().out.strip())
    assert server.calls["ScriptProcess.close"] == 1
    assert server.calls["sessions.closed"] == 1  # the command's own session, with the job detached from it
    process = server.jobs[job_id]
    assert process.exited(120)
    assert process.returncode is None and _status(server, job_id) == "Running"  # not polled yet
    assert main(["status", str(job_id), *server.args]) == 0  # the script's own outcome says it
    assert capsys.readouterr().out.startswith(f"job {job_id}: finished: nuclei_count on 1 plate")
    assert results_on_plate(server) != []
    assert not process.session.closed


# ---- the job's session ------------------------------------------------------------------------

def test_the_jobs_session_is_in_the_launching_group_and_lives_until_the_job_is_closed(server):
    second = server.add_group("second", "rwra--")
    server.user.groups.append(second.id)
    with gateway(server) as conn:
        server.session_of(conn.c).group = second.id  # the launching session's current group
        job_id, proc = jobs.start_job(conn, server.describe_id, _describe_inputs(server.plate_id))
        process = server.jobs[job_id]
        assert process.session.group == second.id
        assert server.store.group_of(server.store.get("ScriptJob", job_id)) == second.id
        outputs = jobs.results_of(proc, 120)
        assert outputs["Message"].startswith(f"plate {server.plate_id}: ")
        assert not process.session.closed  # the script closed its client, not the job's session
        jobs.close_job(proc)
        assert process.session.closed


def test_launch_reports_a_job_whose_session_timed_out(server, capsys, long_plate):
    """At ``omero.scripts.timeout`` the job's session ends (keep-alive does not extend
    it) and the Processor shuts the script down: nothing can report an outcome or
    give the results, and launch says so instead of failing with a traceback."""
    use_long_plate(server, long_plate)
    server.scripts_timeout = 3.0
    server.shutdown_wait = 1.0
    # paced by RawPixelsStore's latency, so that the run outlasts the timeout
    code = main(["launch", "--plate", str(server.plate_id), "--workers", "1", "--no-progress",
                 "--pixel-access", "server", *server.args])
    out, err = capsys.readouterr()
    assert code == 1, out + err
    (job_id,) = server.jobs
    assert f"job {job_id} ended without an outcome (status Running)" in out
    assert "omero.scripts.timeout" in err and "Traceback" not in err
    assert server.jobs[job_id].session.closed
    assert results_on_plate(server) == []


# ---- results and status ---------------------------------------------------------------------

def test_results_are_read_once_after_polling(server):
    import omero

    server.processor_check_seconds = 3600
    with gateway(server) as conn:
        job_id, proc = jobs.start_job(conn, server.describe_id, _describe_inputs(server.plate_id))
        with pytest.raises(omero.ApiUsageException, match="more than 5 seconds"):
            proc.getResults(60)
        assert server.jobs[job_id].exited(120)
        with jobs.JobWatch(conn, job_id) as watch:
            state = watch.state()
        assert state.status == "Running" and state.outcome == "finished"  # said by the script itself
        outputs = jobs.results_of(proc, 120)  # polls, then asks once
        assert _status(server, job_id) == "Finished"
        assert outputs["Message"].startswith(f"plate {server.plate_id}: ")
        with pytest.raises(omero.ApiUsageException, match="No current process"):
            proc.getResults(0)
        jobs.close_job(proc)


def test_a_still_running_job_has_no_results_yet(server, long_plate):
    use_long_plate(server, long_plate)
    with gateway(server) as conn:
        job_id, proc = jobs.start_job(conn, server.run_id, _run_inputs(conn, server.plate_id, 1))
        with pytest.raises(jobs.JobError, match="still running"):
            jobs.results_of(proc, 0.5)
        outputs = jobs.results_of(proc, 300)  # the earlier refusal used nothing up
        assert outputs["Message"].startswith("nuclei_count on 1 plate")
        jobs.close_job(proc)


# ---- the script's process ---------------------------------------------------------------------

PROBE = '''
import os, signal, subprocess, sys
import omero.scripts as scripts
from omero.rtypes import rstring

client = scripts.client("Probe.py", "What the Processor gives a script.", scripts.Bool("Stubborn", optional=True))
try:
    client.setOutput("file", rstring(os.path.abspath(__file__)))
    client.setOutput("listing", rstring(",".join(sorted(os.listdir(".")))))
    client.setOutput("own_group", rstring(str(os.getpgid(0) == os.getpid())))
    client.setOutput("env", rstring(",".join(sorted(os.environ))))
    if client.getInput("Stubborn", unwrap=True):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", "import signal, time; "
                                  "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
        client.setOutput("child", rstring(str(child.pid)))
        import time
        time.sleep(600)
finally:
    client.closeSession()
'''


def test_the_script_runs_as_the_processor_runs_it(server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENHCS_NOT_FOR_SCRIPTS", "1")
    probe = tmp_path / "Probe.py"
    probe.write_text(PROBE)
    run = run_script(server, probe, {})
    assert run.returncode == 0, run.stderr
    assert run.output("file").endswith("/script")
    assert run.output("listing") == "config,err,out,script"
    assert run.output("own_group") == "True"
    env = set(run.output("env").split(","))
    assert "OPENHCS_NOT_FOR_SCRIPTS" not in env
    assert env <= PROCESSOR_ENVIRONMENT, env - PROCESSOR_ENVIRONMENT


def test_closing_a_job_kills_its_whole_process_group(server, tmp_path):
    """A script that ignores SIGTERM, and its child, are SIGKILLed together at the
    end of a shutdown."""
    from omero.rtypes import rbool

    server.shutdown_wait = 0.2
    probe = tmp_path / "Probe.py"
    probe.write_text(PROBE)
    probe_id = server.install_script(probe)
    with gateway(server) as conn:
        job_id, proc = jobs.start_job(conn, probe_id, {"Stubborn": rbool(True)})
        process = server.jobs[job_id]
        deadline = time.monotonic() + 60
        while "child" not in process.session.outputs and time.monotonic() < deadline:
            time.sleep(0.05)
        child = psutil.Process(int(process.session.outputs["child"].getValue()))
        assert not proc.cancel()  # SIGTERM, ignored
        proc.close(False)
        assert process.wait(60) == -9
        gone, alive = psutil.wait_procs([child], timeout=30)
        assert not alive


# ---- progress writes --------------------------------------------------------------------------

def test_progress_is_written_on_one_percent_or_ten_seconds(server):
    """Every write of the job's message is an event and an event-log row on the
    server: a run that reports thousands of small steps writes a handful."""
    import omero.clients

    from openhcs_omero_lib.execution.progress import Progress
    from openhcs_omero_lib.omero.job_progress import JobMessagePublisher
    from openhcs_omero_lib.testing.script_service import new_job

    job_id = new_job(server, server.user, server.group.id).getId().getValue()
    client = omero.client(host=server.host, port=server.port,
                          pmap=[f"--Ice.Default.Router={server.router}", f"--omero.job={job_id}"])
    client.createSession(server.user.name, server.password)
    try:
        publisher = JobMessagePublisher(client, interval=0.01)
        assert publisher.active
        started = time.monotonic()
        fields = 10_000
        for done in range(1, 501):  # 5% of the run, in 500 steps
            publisher.publish(Progress(done // 10, 1000, done, fields, 0, time.monotonic() - started))
            time.sleep(0.002)
        seconds = time.monotonic() - started
        publisher.finish("finished", "all done")
    finally:
        client.closeSession()
    writes = server.calls["JobHandle.setMessage"]
    # the first step, one per 1% of the fields, one per 10 s, and the outcome
    assert 2 <= writes <= 1 + 5 + int(seconds / 10) + 1, (writes, seconds)
    assert server.store.get("ScriptJob", job_id).getMessage().getValue() == "finished: all done"

