"""The end-to-end scenarios (``scenarios.py``) against the OMERO stand-in.

The real-server suite (``integration/test_real_server.py``) runs the same scenarios;
here they run on every test run, so that each helper it relies on (uploading a
plate through the API, running scripts through the script service, reading results
as a client, cleaning up) is exercised without a server.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import scenarios
from omero_fixtures import gateway, standin

# Everything a scenario may leave in the stand-in's store; cleanup must empty these.
CREATED_KINDS = ("Plate", "PlateAcquisition", "Well", "WellSample", "Image", "Pixels", "Channel", "LogicalChannel",
                 "FileAnnotation", "MapAnnotation", "PlateAnnotationLink", "WellAnnotationLink", "ImageAnnotationLink",
                 "Roi", "Polygon")


class StandInTarget(scenarios.Target):
    """The stand-in with the bundle's scripts installed as official scripts."""

    def __init__(self, server):
        super().__init__()
        self.server = server
        self.script_files = [server.install_script(path) for path in sorted(scenarios.SCRIPTS_DIR.glob("*.py"))]

    def settings(self):
        from openhcs_omero_lib.omero.connection import ConnectionSettings

        s = self.server
        return ConnectionSettings(host=s.host, port=s.port, user=s.user.name, password=s.password, router=s.router)


class ColleagueTarget(scenarios.Target):
    """Another user of the stand-in, in the same group as its first."""

    def __init__(self, server, name: str, password: str):
        super().__init__()
        self.server = server
        self.user = server.add_user(name, password, [server.group])
        self.password = password

    def settings(self):
        from openhcs_omero_lib.omero.connection import ConnectionSettings

        s = self.server
        return ConnectionSettings(host=s.host, port=s.port, user=self.user.name, password=self.password,
                                  router=s.router)


def left_in_store(server) -> dict[str, list[int]]:
    """What the scenarios created that is still in the store; the scripts' own files
    and the jobs' stdout/stderr (which OMERO keeps with each job) are not theirs."""
    store = server.store
    left = {kind: sorted(store.objects[kind]) for kind in CREATED_KINDS if store.objects.get(kind)}
    job_logs = {link.getChild().getId().getValue() for link in store.all("JobOriginalFileLink")}
    files = sorted(set(store.objects.get("OriginalFile", {})) - set(server.scripts) - job_logs)
    if files:
        left["OriginalFile"] = files
    return left


@pytest.fixture()
def target():
    with standin() as server:
        target = StandInTarget(server)
        try:
            yield target
        finally:
            problems = target.cleanup()
        assert problems == []
        assert left_in_store(server) == {}


def test_upload_reads_back_identically(target, multi_plate):
    plate_id = scenarios.upload_reads_back_identically(target, multi_plate.folder)
    store = target.server.store
    # Written through the API, not read from the folder as server.import_plate does.
    assert target.server.calls["RawPixelsStore.setPlane"] == multi_plate.config.wells * multi_plate.config.sites * \
        multi_plate.config.channels * multi_plate.config.z_planes * multi_plate.config.timepoints
    assert store.get("Plate", plate_id).getRowNamingConvention().getValue() == "letter"


def test_run_and_check_against_truth(target, normal_plate):
    view = scenarios.run_and_check_against_truth(target, normal_plate.folder)
    assert len(view.images) == normal_plate.config.wells * normal_plate.config.sites


def test_rerun_is_idempotent(target, tiny_plate, tmp_path):
    first, second = scenarios.rerun_is_idempotent(target, tiny_plate, tmp_path)
    store = target.server.store
    # Replaced means removed from the server, not only unlinked.
    assert not any(store.get(kind, i) for kind, i in first.all_ids())
    assert all(store.get(kind, i) for kind, i in second.all_ids())


def test_describe_and_delete(target, tiny_plate):
    scenarios.describe_and_delete(target, tiny_plate)


def test_cancel_stops_and_attaches_nothing(target, normal_plate, tmp_path):
    scenarios.cancel_stops_and_attaches_nothing(target, normal_plate.folder, tmp_path)
    assert target.server.calls["ScriptProcess.cancel"] == 1


def test_clients_run_the_script_and_read_its_outputs(target, tiny_plate):
    scenarios.clients_run_the_script_and_read_its_outputs(target, tiny_plate)


def test_colleagues_results_stay(target, tiny_plate):
    assert target.server.group.permissions == "rwra--"  # read-annotate: the server refuses deleting bob's
    scenarios.colleagues_results_stay(target, ColleagueTarget(target.server, "bob", "bob-password"), tiny_plate)


def test_time_lapse_runs_and_gaps(target, timelapse_runs):
    view = scenarios.time_lapse_runs_and_gaps(target, timelapse_runs)
    store = target.server.store
    # The plate was made through the API: runs, then sparse wells by deleting fields.
    assert len(store.children("PlateAcquisition", "plate", view.plate_id)) == len(timelapse_runs)
    assert target.server.calls["ServiceFactory.submit"] >= 1


def test_no_wait_job_outlives_its_launcher(target, tiny_plate):
    server = target.server
    job_id = scenarios.no_wait_job_outlives_its_launcher(target, tiny_plate, timeout=120)
    assert server.calls["ScriptProcess.close"] == 1  # detached before its session ended
    assert server.calls["sessions.closed"] >= 1
    process = server.jobs[job_id]
    assert not process.session.closed  # the job's session lives on until omero.scripts.timeout
    assert process.wait(60) == 0 and process.orphans == 0
    assert server.store.get("ScriptJob", job_id).getStatus().getValue().getValue() == "Finished"


def test_results_are_read_once(target, tiny_plate):
    scenarios.results_are_read_once(target, tiny_plate)
    assert target.server.calls["ScriptProcess.getResults"] == 3


def test_pictures_once_per_run(target, tiny_plate):
    scenarios.pictures_once_per_run(target, tiny_plate)
    assert target.server.store.all("Roi")  # until cleanup, which must remove them


def test_pixel_access_reads_the_same(target, tiny_plate):
    scenarios.pixel_access_reads_the_same(target, tiny_plate)


def test_wrong_truth_fails_and_cleanup_still_removes_everything(tiny_plate, tmp_path):
    """The accuracy check can fail, and a scenario that fails half-way (plate
    uploaded, results attached) still leaves nothing behind after cleanup."""
    folder = tmp_path / "plate"
    shutil.copytree(tiny_plate, folder)
    truth = (folder / "ground_truth.csv").read_text().splitlines()
    doubled = [truth[0]] + [f"{line.rsplit(',', 1)[0]},{2 * int(line.rsplit(',', 1)[1]) + 2}" for line in truth[1:]]
    (folder / "ground_truth.csv").write_text("\n".join(doubled) + "\n")
    with standin() as server:
        target = StandInTarget(server)
        with pytest.raises(AssertionError, match="within 5% of ground truth"):
            scenarios.run_and_check_against_truth(target, folder, workers=1)
        assert server.store.objects.get("Plate") and server.store.objects.get("FileAnnotation")
        assert target.cleanup() == []
        assert left_in_store(server) == {}


def test_cleanup_reports_what_it_could_not_remove(tiny_plate):
    import omero

    with standin() as server:
        target = StandInTarget(server)
        plate_id = target.import_plate(tiny_plate)
        server.fail("ServiceFactory.submit", lambda: omero.ApiUsageException(message="no deletes today"))
        problems = target.cleanup()
        assert f"Plate:{plate_id} is still there" in problems
        assert server.store.get("Plate", plate_id) is not None


def test_both_suites_run_every_scenario():
    """The real-server suite runs the very scenarios this one does, one test each."""
    path = Path(__file__).parent / "integration" / "test_real_server.py"
    spec = importlib.util.spec_from_file_location("_real_server_suite", path)
    real = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(real)
    for scenario in scenarios.SCENARIOS:
        for module in (globals(), vars(real)):
            assert f"test_{scenario.__name__}" in module, (scenario.__name__, module["__file__"])
        assert scenario.__name__ in Path(path).read_text()


def run_real_server_suite(server, *pytest_args: str) -> subprocess.CompletedProcess:
    """``pytest -m omero tests/integration`` in a new process, configured for ``server``."""
    tests = Path(__file__).resolve().parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMERO_TEST_")}
    env.update(OMERO_TEST_HOST=server.host, OMERO_TEST_PORT=str(server.port), OMERO_TEST_ROUTER=server.router,
               OMERO_TEST_USER=server.user.name, OMERO_TEST_PASSWORD=server.password)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "omero",
                           str(tests / "integration"), *pytest_args],
                          cwd=tests.parent, env=env, capture_output=True, text=True, timeout=600)


def test_real_server_suite_runs_and_cleans_up():
    """The integration suite's own code (settings, script check, its target and
    cleanup) works when it has a server: here, the stand-in."""
    with standin() as server:
        for path in sorted(scenarios.SCRIPTS_DIR.glob("*.py")):
            server.install_script(path)
        done = run_real_server_suite(server, "-k", "upload_reads_back")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "1 passed" in done.stdout
        assert server.calls["IScript.getScriptText"] == 3 and server.calls["IPixels.createImage"] > 0
        assert left_in_store(server) == {}


def test_real_server_suite_says_how_to_install_missing_scripts():
    with standin() as server:
        done = run_real_server_suite(server, "-k", "upload_reads_back")
    assert done.returncode != 0
    assert "Run_HCS_Pipeline.py (missing)" in done.stdout and "install.sh --omero-server" in done.stdout
    assert "OMERO_TEST_ROOT_PASSWORD" in done.stdout
    assert server.password not in done.stdout + done.stderr


def test_failed_upload_removes_the_images_it_made(tiny_plate):
    import omero

    from openhcs_omero_lib.testing.upload import upload_plate

    with standin() as server, gateway(server) as conn:
        server.fail("IUpdate.saveAndReturnObject", omero.ServerError(message="disk full"))
        with pytest.raises(omero.ServerError):
            upload_plate(conn, tiny_plate)
        assert server.calls["IPixels.createImage"] == 4
        assert left_in_store(server) == {}


def test_upload_model_refuses_what_it_does_not_model(tiny_plate):
    """The stand-in's side of uploads fails loudly outside the calls upload_plate makes."""
    import numpy as np
    import omero
    import omero.model
    from omero.rtypes import rint, rstring

    from openhcs_omero_lib.omero.plate import load_plate
    from openhcs_omero_lib.testing.upload import upload_plate

    with standin() as server, gateway(server) as conn:
        uploaded = load_plate(conn, upload_plate(conn, tiny_plate), cache=None)
        imported = load_plate(conn, server.import_plate(tiny_plate), cache=None)
        store = conn.c.sf.createRawPixelsStore()
        try:
            store.setPixelsId(next(iter(uploaded.pixels_ids.values())), True)
            with pytest.raises(omero.ApiUsageException, match="buffer of 10 bytes"):
                store.setPlane(b"0" * 10, 0, 0, 0)
            store.setPixelsId(next(iter(imported.pixels_ids.values())), True)
            with pytest.raises(omero.ApiUsageException, match="was imported"):
                store.setPlane(np.zeros((96, 96), ">u2").tobytes(), 0, 0, 0)
        finally:
            store.close()
        lc = omero.model.LogicalChannelI(server.store.all("LogicalChannel")[-1].getId().getValue(), True)
        lc.setFluor(rstring("GFP"))
        with pytest.raises(omero.ApiUsageException, match="LogicalChannel.fluor"):
            conn.getUpdateService().saveObject(lc)
        other = server.add_group("elsewhere")
        server.user.groups.append(other.id)
        plate, well, sample = omero.model.PlateI(), omero.model.WellI(), omero.model.WellSampleI()
        well.setRow(rint(0))
        well.setColumn(rint(0))
        sample.setImage(omero.model.ImageI(next(iter(uploaded.layout.image_ids.values())), False))
        well.addWellSample(sample)
        plate.addWell(well)
        with pytest.raises(omero.SecurityViolation, match="not in group"):
            conn.getUpdateService().saveObject(plate, {"omero.group": str(other.id)})
