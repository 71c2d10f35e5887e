"""``openhcs-omero launch | status | cancel`` against the stand-in's script service.

The stand-in runs the real Run_HCS_Pipeline script as OMERO's Processor does (its
parameters parsed and validated, then the script run in its own process with the
job's session), so these tests follow a job from a workstation through the same
calls a real server answers: IScript.runScript, ScriptProcess, JobHandle.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from omero_fixtures import (
    RUN_SCRIPT,
    as_from_a_shell,
    results_on_plate,
    script_descendants,
    standin,
    use_long_plate,
    wait_for_progress,
    write_fake_imagexpress,
)
from openhcs_omero_lib.cli.app import main
from openhcs_omero_lib.omero.jobs import PIPELINE_NS
from openhcs_omero_lib.plates.synthetic import read_ground_truth


@pytest.fixture()
def server(normal_plate, monkeypatch):
    with standin() as server:
        server.plate_id = server.import_plate(normal_plate.folder)
        server.script_id = server.install_script(RUN_SCRIPT)
        monkeypatch.setenv("OMERO_USER", server.user.name)
        monkeypatch.setenv("OMERO_PASSWORD", server.password)
        for var in ("OMERO_SESSION_KEY", "OMERO_GROUP", "OMERO_HOST", "OMERO_PORT"):
            monkeypatch.delenv(var, raising=False)
        server.args = ["--host", server.host, "--port", str(server.port), "--router", server.router]
        yield server


@pytest.fixture(scope="module")
def long_plate(tmp_path_factory):
    """96 wells x 2 fields of 64 px: with latency, a run long enough to cancel half-way."""
    folder = tmp_path_factory.mktemp("long") / "plate"
    write_fake_imagexpress(folder, wells=96, sites=2, channels=2, size=64, name="LONG")
    return folder


def _jobs(server) -> list:
    return server.store.all("ScriptJob")


def _gone(processes: list[psutil.Process], timeout: float) -> bool:
    gone, alive = psutil.wait_procs(processes, timeout=timeout)
    return not alive


# ---- launch, waiting --------------------------------------------------------------------------

def test_launch_shows_live_progress_and_attaches_results(server, capsys, long_plate):
    use_long_plate(server, long_plate)
    started = time.monotonic()
    code = main(["launch", "--plate", str(server.plate_id), "--workers", "2", "--interval", "0.05",
                 "--pixel-access", "server", *server.args])  # paced by RawPixelsStore's latency
    seconds = time.monotonic() - started
    out, err = capsys.readouterr()
    assert code == 0, err
    fields = 96 * 2
    seen = {int(n) for n in re.findall(rf"fields (\d+)/{fields}", err)}
    assert len([n for n in seen if 0 < n < fields]) >= 2, err  # progress seen while it ran
    assert re.search(r"wells \d+/96|\d+/96 \[", err)
    assert "nuclei_count on 1 plate with 2 workers" in out
    ids = {int(i) for line in out.splitlines() if line.startswith("attached FileAnnotation:")
           for i in line.split(":")[1].split(",")}
    on_plate = {a.getId().getValue() for a in results_on_plate(server)}
    assert on_plate and on_plate <= ids
    (job,) = _jobs(server)
    assert job.getStatus().getValue().getValue() == "Finished"
    assert job.getMessage().getValue().startswith("finished: nuclei_count on 1 plate")
    # progress is looked at every 0.5 s and written on 1% of the fields or every 10 s
    assert 1 <= server.calls["JobHandle.setMessage"] <= min(seconds / 0.5, 100 + seconds / 10) + 3


def test_launch_saves_rois_capped_and_no_heat_map(server, capsys):
    """--save-rois --max-rois N and --no-heatmap reach the script as its dialog's
    Save_ROIs, Max_ROIs_Per_Image and Heat_Map."""
    from omero_fixtures import file_name, gateway, plate_members

    code = main(["launch", "--plate", str(server.plate_id), "--workers", "1", "--no-progress", "--save-rois",
                 "--max-rois", "2", "--no-heatmap", *server.args])
    out, err = capsys.readouterr()
    assert code == 0, err
    names = {file_name(server.store, a) for a in results_on_plate(server)}
    assert "nuclei_count_images.csv" in names and not any(n.endswith(".png") for n in names), names
    images = plate_members(server.store, server.plate_id)["Image"]
    with gateway(server) as conn:
        counts = [len(conn.getRoiService().findByImage(iid, None, conn.SERVICE_OPTS).rois) for iid in images]
    assert max(counts) == 2 and min(counts) >= 1, counts  # every field has nuclei; none keeps more than 2


def test_launch_refuses_max_rois_without_save_rois_and_an_unknown_heat_map(server, capsys):
    assert main(["launch", "--plate", str(server.plate_id), "--max-rois", "5", *server.args]) == 2
    assert "--max-rois needs --save-rois" in capsys.readouterr().err
    assert main(["launch", "--plate", str(server.plate_id), "--workers", "1", "--no-progress",
                 "--heatmap", "no_such_measurement", *server.args]) != 0
    out, err = capsys.readouterr()
    assert "Heat_Map_Measurement" in out + err and "no_such_measurement" in out + err
    assert results_on_plate(server) == []


def test_launch_with_a_pipeline_file_uploads_it_once(server, capsys, tmp_path, normal_plate):
    assert main(["show-pipeline", "nuclei_count"]) == 0
    spec = tmp_path / "my_pipeline.yaml"
    spec.write_text(capsys.readouterr().out)
    for _ in range(2):
        code = main(["launch", "--plate", str(server.plate_id), "--pipeline", str(spec), "--workers", "1",
                     "--no-progress", *server.args])
        assert code == 0
    uploads = [a for a in server.store.all("FileAnnotation") if a.getNs() and a.getNs().getValue() == PIPELINE_NS]
    assert len(uploads) == 1
    assert len(results_on_plate(server)) == 5  # the re-run replaced the first run's CSVs, JSON, field table, heat map
    truth = sum(read_ground_truth(normal_plate.folder).values())
    total = int(re.search(r"nuclei_count total (\d+)", capsys.readouterr().out).group(1))
    assert abs(total - truth) <= 0.05 * truth


# ---- no-wait, status, cancel ----------------------------------------------------------------

def test_no_wait_then_status_while_running_and_after(server, capsys, long_plate):
    use_long_plate(server, long_plate)
    # paced by RawPixelsStore's latency, so that the job is still running when asked
    assert main(["launch", "--plate", str(server.plate_id), "--workers", "1", "--no-wait", "--pixel-access", "server",
                 *server.args]) == 0
    job_id = int(capsys.readouterr().out.strip())
    with server.gateway() as conn:
        wait_for_progress(conn, job_id)
    assert main(["status", str(job_id), *server.args]) == 4
    assert re.search(r"running: wells \d+/96, fields \d+/192, errors 0", capsys.readouterr().out)
    assert server.jobs[job_id].wait(120) == 0
    assert main(["status", str(job_id), *server.args]) == 0
    assert capsys.readouterr().out.startswith(f"job {job_id}: finished: nuclei_count on 1 plate")


@pytest.mark.parametrize("server_signals", [False, True], ids=["script-notices", "server-signals"])
def test_cancel_by_id_stops_workers_and_attaches_nothing(server, capsys, server_signals, long_plate):
    use_long_plate(server, long_plate)
    server.cancel_job_signals = server_signals
    # through RawPixelsStore, which the server's latency makes slow enough for workers to start
    assert main(["launch", "--plate", str(server.plate_id), "--workers", "2", "--no-wait", "--pixel-access", "server",
                 *server.args]) == 0
    job_id = int(capsys.readouterr().out.strip())
    with server.gateway() as conn:
        wait_for_progress(conn, job_id)
    workers = script_descendants(server, job_id)
    assert len(workers) >= 2
    started = time.monotonic()
    assert main(["cancel", str(job_id), "--timeout", "30", *server.args]) == 0
    out = capsys.readouterr().out
    assert f"job {job_id}: cancelled: stopped during plate {server.plate_id}" in out
    assert server.jobs[job_id].exited(10), "the script is still running"
    assert _gone(workers, timeout=10), "worker processes still running"
    assert time.monotonic() - started < 15
    assert server.jobs[job_id].orphans == 0
    assert results_on_plate(server) == []
    assert server.store.annotations_on("Well", server.store.children("Well", "plate", server.plate_id)[0]
                                       .getId().getValue()) == []
    assert main(["status", str(job_id), *server.args]) == 3


def test_ctrl_c_while_waiting_cancels_the_job_on_the_server(server, long_plate):
    use_long_plate(server, long_plate)
    env = {**os.environ, "OMERO_USER": server.user.name, "OMERO_PASSWORD": server.password}
    proc = subprocess.Popen([sys.executable, "-m", "openhcs_omero_lib.cli", "launch", "--plate",
                             str(server.plate_id), "--workers", "2", "--no-progress",
                             # paced by RawPixelsStore's latency: direct reads may end before the Ctrl-C
                             "--pixel-access", "server", *server.args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=as_from_a_shell)
    try:
        deadline = time.monotonic() + 60
        while not server.jobs and time.monotonic() < deadline:
            time.sleep(0.05)
        (job_id,) = server.jobs
        with server.gateway() as conn:
            wait_for_progress(conn, job_id)
        workers = script_descendants(server, job_id)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert f"cancelling job {job_id}" in err
    assert server.jobs[job_id].exited(10) and _gone(workers, timeout=10)
    (job,) = _jobs(server)
    assert job.getStatus().getValue().getValue() == "Cancelled"
    assert results_on_plate(server) == []


def test_cancel_of_an_ended_job_says_so(server, capsys):
    assert main(["launch", "--plate", str(server.plate_id), "--workers", "1", "--no-progress", *server.args]) == 0
    (job,) = _jobs(server)
    capsys.readouterr()
    assert main(["cancel", str(job.getId().getValue()), *server.args]) == 0
    assert "has already ended: finished" in capsys.readouterr().out
    assert len(results_on_plate(server)) == 5  # CSVs, JSON, the field table and the heat map


# ---- bad input: one line, nothing started or uploaded ------------------------------------------

def _launch_error(server, capsys, *extra) -> str:
    code = main(["launch", "--plate", str(server.plate_id), "--no-progress", *extra, *server.args])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1
    assert server.jobs == {}  # no script process was started
    return err


def test_unknown_pipeline_starts_nothing(server, capsys):
    assert "neither a pipeline preset" in _launch_error(server, capsys, "--pipeline", "no_such_preset")


def test_broken_pipeline_file_is_reported_before_anything_is_uploaded(server, capsys, tmp_path):
    spec = tmp_path / "broken.yaml"
    spec.write_text("name: broken\nsteps:\n  - op: no_such_step\n")
    err = _launch_error(server, capsys, "--pipeline", str(spec))
    assert "broken.yaml" in err and "no_such_step" in err
    assert [a for a in server.store.all("FileAnnotation") if a.getNs() and a.getNs().getValue() == PIPELINE_NS] == []


def test_script_not_installed(server, capsys):
    server.scripts.clear()
    assert "Run_HCS_Pipeline.py is not installed on this server" in _launch_error(server, capsys)


def test_no_processor_available(server, capsys):
    server.processor_available = False
    assert "No processor available" in _launch_error(server, capsys)


def test_parameters_the_script_refuses(server, capsys):
    err = _launch_error(server, capsys, "--workers", "1000")
    assert "refused the parameters" in err and "Workers" in err


def test_missing_plate_fails_the_job_with_its_reason(server, capsys):
    code = main(["launch", "--plate", "999999", "--no-progress", *server.args])
    out = capsys.readouterr().out
    assert code == 1
    assert "Nothing attached" in out and "no Plate with ID 999999" in out
    (job,) = _jobs(server)
    assert job.getMessage().getValue().startswith("failed: Nothing attached")


def test_status_of_a_job_that_is_not_yours(server, capsys, monkeypatch):
    assert main(["status", "424242", *server.args]) == 2
    assert "no job 424242 of yours" in capsys.readouterr().err
    bob = server.add_user("bob", "bob-password", [server.group])
    assert main(["launch", "--plate", str(server.plate_id), "--workers", "1", "--no-progress", *server.args]) == 0
    (job,) = _jobs(server)
    capsys.readouterr()
    monkeypatch.setenv("OMERO_USER", bob.name)
    monkeypatch.setenv("OMERO_PASSWORD", bob.password)
    assert main(["status", str(job.getId().getValue()), *server.args]) == 2
    assert f"no job {job.getId().getValue()} of yours" in capsys.readouterr().err


def test_launch_measures_only_the_chosen_run(server, capsys, timelapse_runs):
    from omero_fixtures import csv_rows, file_name

    plate_id = server.import_plate(timelapse_runs)
    runs = {r.getName().getValue(): r.getId().getValue()
            for r in server.store.children("PlateAcquisition", "plate", plate_id)}
    code = main(["launch", "--plate", str(plate_id), "--run", str(runs["Run B"]), "--workers", "1",
                 "--attach", "plate", "--outputs", "csv", "--no-progress", *server.args])
    assert code == 0, capsys.readouterr().err
    [images] = [a for a in server.store.annotations_on("Plate", plate_id)
                if file_name(server.store, a).endswith("_images.csv")]
    rows = csv_rows(server.store, images)
    assert rows and {(r["run_id"], r["run"]) for r in rows} == {(str(runs["Run B"]), "Run B")}
    # a run of another plate (or none at all) is refused before anything runs
    assert main(["launch", "--plate", str(server.plate_id), "--run", str(runs["Run A"]), "--workers", "1",
                 "--no-progress", *server.args]) == 1
    assert f"no chosen plate has the run(s) {runs['Run A']}" in capsys.readouterr().out
