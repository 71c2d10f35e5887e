"""Soak: many runs in a row leave nothing growing.

A hundred runs of Run_HCS_Pipeline's code path on a small plate, each as the
Processor gives the script a job: a session of its own with the inputs in it, a
client joining it by its key, the script's ``serve`` (which runs the pipeline,
attaches, sets the outputs and closes the client), then the job's session closed.
This process stands for the script's: its processes, open files, threads and
memory are measured after a few runs (imports, caches) and after the hundred, with
the stand-in's open sessions and services and the results on the plate (one set,
replaced each time). Threads are Python's: the stand-in serves from this process
too, and its Ice thread pool grows to the most calls it has had at once. A few runs of the
real script, each in a process of its own, measure the server's side the same way.
``OPENHCS_SOAK_RUNS`` changes the count.
"""

from __future__ import annotations

import gc
import logging
import os
import threading

import psutil
import pytest

from omero_fixtures import RUN_SCRIPT, standin
from reliability import record, record_soak

RUNS = int(os.environ.get("OPENHCS_SOAK_RUNS", "100"))
SCRIPT_RUNS = 5
WARM_UP = 5


def _server_side(server) -> dict:
    return {"open sessions": sum(not s.closed for s in server.store.sessions.values()),
            "open services": sum(server.open_stateful[k] for k in ("RawFileStore", "RawPixelsStore", "Table",
                                                                     "Handle", "JobHandle")),
            "result files": len(server.store.objects.get("FileAnnotation", {}))}


def _this_process() -> dict:
    gc.collect()
    me = psutil.Process()
    return {"processes": len(me.children(recursive=True)), "open files": me.num_fds(),
            "threads": threading.active_count(), "memory MB": round(me.memory_info().rss / 2**20)}


def _one_run(server, plate_id: int) -> str:
    import omero
    from omero.rtypes import rint, rlist, rlong, rstring, unwrap

    from openhcs_omero_lib.omero.script_params import serve
    from openhcs_omero_lib.testing.processor import end_session, job_session

    session = job_session(server, server.user)
    session.inputs.update({"Data_Type": rstring("Plate"), "IDs": rlist([rlong(plate_id)]), "Workers": rint(1),
                           "Attach_To": rstring("Plate and wells")})
    client = omero.client(host=server.host, port=server.port, pmap=[f"--Ice.Default.Router={server.router}"])
    try:
        client.createSession(session.uuid, session.uuid)  # as the script does with the Processor's config
        serve(client, "run_pipeline_script", progress=True)
    finally:
        client.__del__()  # the communicator too, as the script's process ending does
        end_session(server, session)  # as the Processor does when the job ends
    return unwrap(session.outputs.get("Message")) or ""


@pytest.mark.reliability("soak", deadline=900)
def test_a_hundred_runs_leave_nothing_growing(tiny_plate, request):
    root = logging.getLogger()
    level = root.level
    with standin() as server:
        plate_id = server.import_plate(tiny_plate)
        try:
            for _ in range(WARM_UP):
                assert "attached" in _one_run(server, plate_id)
            before = {**_this_process(), **_server_side(server)}
            messages = [_one_run(server, plate_id) for _ in range(RUNS)]
            after = {**_this_process(), **_server_side(server)}
        finally:
            root.setLevel(level)  # serve() sets up logging as a script's own process
    record_soak(request, RUNS, before, after)
    grown = {k: after[k] - before[k] for k in before if k != "memory MB"}
    record(request, orphaned=sum(max(0, v) for k, v in grown.items()))
    assert all(m.startswith("nuclei_count on 1 plate") and "replaced" in m for m in messages), messages[-1]
    assert all(v <= 0 for v in grown.values()), f"grew over {RUNS} runs: {grown}"
    assert after["memory MB"] - before["memory MB"] <= max(20, before["memory MB"] // 10), (before, after)


@pytest.mark.reliability("soak", deadline=600)
def test_script_runs_in_processes_of_their_own_leave_nothing_on_the_server(tiny_plate, request):
    from omero.rtypes import rint, rlist, rlong, rstring

    from openhcs_omero_lib.testing.processor import run_script

    inputs = {"Data_Type": rstring("Plate"), "Workers": rint(1), "Attach_To": rstring("Plate and wells")}
    with standin() as server:
        plate_id = server.import_plate(tiny_plate)
        inputs["IDs"] = rlist([rlong(plate_id)])
        first = run_script(server, RUN_SCRIPT, inputs, timeout=180)
        assert first.returncode == 0, first.stderr[-2000:]
        before = {**_server_side(server), "processes": len(psutil.Process().children(recursive=True))}
        runs = [run_script(server, RUN_SCRIPT, inputs, timeout=180) for _ in range(SCRIPT_RUNS)]
        after = {**_server_side(server), "processes": len(psutil.Process().children(recursive=True))}
    record_soak(request, SCRIPT_RUNS, before, after)
    grown = {k: after[k] - before[k] for k in before}
    record(request, orphaned=sum(max(0, v) for v in grown.values()))
    assert all(r.returncode == 0 and "replaced" in (r.output("Message") or "") for r in runs)
    assert all(v <= 0 for v in grown.values()), f"grew over {SCRIPT_RUNS} runs: {grown}"
