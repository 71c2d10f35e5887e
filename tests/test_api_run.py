"""Running from Python on an OMERO plate and reading the results back into pandas, and
tuning a preset from the script's dialog and the command line; through real omero-py
over the stand-in."""

from __future__ import annotations

import collections
import itertools
import os

import pandas as pd
import pytest

from omero_fixtures import (
    NS,
    RUN_SCRIPT,
    calls_since,
    created_since,
    gateway,
    iquery_calls,
    plate_members,
    snapshot,
    standin,
)
from omero_helpers import isolate_omero, parse_script_text

_names = itertools.count(1)


@pytest.fixture(scope="module")
def server(tiny_plate):
    with standin() as server:
        server.plate_id = server.import_plate(tiny_plate)
        yield server


@pytest.fixture(scope="module")
def local(tiny_plate):
    """The same plate run from its folder: what the OMERO run must measure."""
    from openhcs_omero_lib.api import run_pipeline

    return run_pipeline(tiny_plate, "nuclei_count", workers=1)


@pytest.fixture(scope="module")
def attached(server, conn):
    """nuclei_count run from Python on the plate, everything attached everywhere."""
    from openhcs_omero_lib.api import run_pipeline

    return run_pipeline(f"Plate:{server.plate_id}", "nuclei_count", conn=conn, workers=1,
                        attach=("plate", "wells", "images"))


def _group(server, permissions: str):
    n = next(_names)
    group = server.add_group(f"run{n}-{permissions}", permissions)
    server.user.groups.append(group.id)
    name = f"erin{n}"
    server.add_user(name, f"{name}-password", [group])
    return group, name, f"{name}-password"


def _ours(server, plate_id) -> set[int]:
    store = server.store
    return {a.getId().getValue() for kind, ids in plate_members(store, plate_id).items() for oid in ids
            for a in store.annotations_on(kind, oid, NS)}


# ---- running -----------------------------------------------------------------------------------------

def test_a_run_from_python_measures_what_the_folder_has_and_attaches_it(server, attached, local):
    assert attached.plate_id == server.plate_id and attached.source == "computed"
    measured = attached.images.drop(columns=["image_id"])
    pd.testing.assert_frame_equal(measured, local.images)
    pd.testing.assert_frame_equal(attached.wells.drop(columns=["well_id"]), local.wells)
    on_objects = _ours(server, server.plate_id)
    assert on_objects and on_objects <= set(attached.attached["FileAnnotation"]) | \
        set(attached.attached["MapAnnotation"])
    assert {kind for kind, _ in [(k, i) for k, ids in plate_members(server.store, server.plate_id).items()
                                 for i in ids if server.store.annotations_on(k, i, NS)]} == {"Plate", "Well", "Image"}


def test_read_results_gives_back_the_same_frames_from_the_table(server, conn, attached):
    from openhcs_omero_lib.api import read_results

    before = collections.Counter(server.calls)
    back = read_results(conn, server.plate_id, "nuclei_count")
    assert back.source == "table" and back.owner == server.user.name
    pd.testing.assert_frame_equal(back.images, attached.images)
    pd.testing.assert_frame_equal(back.wells, attached.wells)
    assert back.summary["pipeline"] == attached.summary["pipeline"]
    assert back.summary["plate"]["id"] == server.plate_id
    calls = calls_since(server, before)
    assert calls["Table.read"] >= 1 and calls["RawPixelsStore.getPlane"] == 0
    for plate in (f"/omero/plate_{server.plate_id}", conn.getObject("Plate", server.plate_id)):
        pd.testing.assert_frame_equal(read_results(conn, plate, "nuclei_count").images, attached.images)


def test_without_a_readable_table_the_csv_gives_the_same(server, conn, attached):
    import omero

    from openhcs_omero_lib.api import read_results

    server.fail("SharedResources.openTable", omero.InternalException(message="no Tables service"))
    try:
        back = read_results(conn, server.plate_id, "nuclei_count")
    finally:
        server.clear_failures()
    assert back.source == "csv"
    pd.testing.assert_frame_equal(back.images, attached.images)
    pd.testing.assert_frame_equal(back.wells, attached.wells)


def test_a_run_without_the_table_is_read_from_its_csv(server, conn, tiny_plate):
    from openhcs_omero_lib.api import read_results, run_pipeline

    pid = server.import_plate(tiny_plate, name="csv-only")
    result = run_pipeline(pid, "nuclear_translocation", conn=conn, workers=1, outputs="csv")
    assert result.attached["FileAnnotation"]
    back = read_results(conn, pid, "nuclear_translocation")
    assert back.source == "csv" and back.summary == {}
    pd.testing.assert_frame_equal(back.images, result.images)
    pd.testing.assert_frame_equal(back.wells, result.wells)


def test_a_plate_with_runs_timepoints_and_z_reads_back_the_same(server, conn, timelapse_runs):
    """Two acquisition runs of 2 timepoints and 3 z planes: every row keeps its run,
    field and timepoint, through the table and through the CSV."""
    import omero

    from openhcs_omero_lib.api import read_results, run_pipeline

    pid = server.import_plate(timelapse_runs, missing=[("Run B", "A02", 2)])
    result = run_pipeline(pid, "nuclei_count", conn=conn, workers=1)
    assert list(result.images.columns[5:8]) == ["run_id", "run", "image_id"]
    assert set(result.images["run"]) == {"Run A", "Run B"} and len(result.images) == (3 * 2 * 2 - 1) * 2
    back = read_results(conn, pid, "nuclei_count")
    assert back.source == "table"
    pd.testing.assert_frame_equal(back.images, result.images)
    pd.testing.assert_frame_equal(back.wells, result.wells)
    server.fail("SharedResources.openTable", omero.InternalException(message="no Tables service"))
    try:
        from_csv = read_results(conn, pid, "nuclei_count")
    finally:
        server.clear_failures()
    assert from_csv.source == "csv"
    pd.testing.assert_frame_equal(from_csv.images, result.images)
    pd.testing.assert_frame_equal(from_csv.wells, result.wells)


def test_a_rerun_from_python_replaces_your_results(server, conn, tiny_plate):
    from openhcs_omero_lib.api import read_results, run_pipeline

    pid = server.import_plate(tiny_plate, name="rerun")
    first = run_pipeline(pid, "nuclei_count", conn=conn, workers=1)
    second = run_pipeline(pid, "nuclei_count", conn=conn, workers=1, min_nucleus_size=80)
    assert second.replaced == sum(len(v) for v in first.attached.values())
    assert _ours(server, pid) <= set(second.attached["FileAnnotation"]) | set(second.attached["MapAnnotation"])
    assert read_results(conn, pid, "nuclei_count").summary["pipeline"]["spec"]["steps"][4]["min_size"] == 80


def test_read_results_reads_yours_else_the_newest(server, tiny_plate):
    """erin ran the pipeline on alice's plate: alice, with none of her own, reads erin's;
    once she has run it, she reads hers and erin still reads her own."""
    from openhcs_omero_lib.api import read_results, run_pipeline

    group, erin, password = _group(server, "rwra--")
    pid = server.import_plate(tiny_plate, name="two-users", group=group)
    with gateway(server) as alice, gateway(server, erin, password) as theirs:
        erins = run_pipeline(pid, "nuclei_count", conn=theirs, workers=1, nuclear_channel=2)
        back = read_results(alice, pid, "nuclei_count")
        assert back.owner == erin
        pd.testing.assert_frame_equal(back.images, erins.images)
        alices = run_pipeline(pid, "nuclei_count", conn=alice, workers=1)
        assert alices.others == {erin: sum(len(v) for v in erins.attached.values())}
        pd.testing.assert_frame_equal(read_results(alice, pid, "nuclei_count").images, alices.images)
        pd.testing.assert_frame_equal(read_results(theirs, pid, "nuclei_count").images, erins.images)
        assert not alices.images.equals(erins.images)  # two different sets, each read as its own


def test_read_results_without_results_says_so(server, conn, tiny_plate):
    from openhcs_omero_lib.api import OmeroInputError, read_results

    pid = server.import_plate(tiny_plate, name="never-run")
    with pytest.raises(LookupError, match=f"plate {pid} has no results of pipeline 'nuclei_count'"):
        read_results(conn, pid, "nuclei_count")
    with pytest.raises(OmeroInputError, match="no Plate with ID 987654"):
        read_results(conn, 987654, "nuclei_count")


def test_attach_nothing_computes_only_even_where_you_may_not_annotate(server, tiny_plate, local):
    from openhcs_omero_lib.api import OmeroInputError, run_pipeline

    group, erin, _ = _group(server, "rwr---")
    pid = server.import_plate(tiny_plate, name="read-only", owner=server.store.users[erin], group=group)
    with gateway(server) as conn:
        before = snapshot(server.store)
        result = run_pipeline(pid, "nuclei_count", conn=conn, workers=1, attach=())
        assert created_since(before, snapshot(server.store)) == {}
        assert result.attached == {} and result.replaced == 0
        pd.testing.assert_frame_equal(result.images.drop(columns=["image_id"]), local.images)
        calls = collections.Counter(server.calls)
        with pytest.raises(OmeroInputError, match="you have no permission to annotate it"):
            run_pipeline(pid, "nuclei_count", conn=conn, workers=1)
        assert calls_since(server, calls)["RawPixelsStore.getPlane"] == 0
        assert created_since(before, snapshot(server.store)) == {}


# ---- refused before any pixel is read --------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, words", [
    (dict(min_nucleus_size=0), "PipelineError", ["min_nucleus_size=0", "greater than or equal to 1"]),
    (dict(ring_width=3), "PipelineError", ["no parameter 'ring_width'"]),
    (dict(nuclear_channel="Cy5"), "OmeroInputError", ["no channel of that name", "1 (DAPI), 2 (FITC)"]),
    (dict(nuclear_channel=3), "OmeroInputError", ["nuclear_channel=3", "has 2 channels"]),
    (dict(attach="plate,desk"), "ValueError", ["unknown attach: desk"]),
    (dict(outputs="csv,pdf"), "ValueError", ["unknown outputs: pdf"]),
    (dict(attach="images", outputs="key_values"), "OmeroInputError", ["would attach nothing"]),
    (dict(workers=0), "ValueError", ["workers must be"]),
    (dict(dask="local:0"), "ValueError", ["local:N needs N between 1 and 64"]),
    (dict(dask=2), "ValueError", ["dask is a scheduler's address or local:N, not int"]),
    (dict(runs=[987654]), "OmeroInputError", ["run(s) 987654"]),
])
def test_bad_input_is_refused_before_any_pixel_is_read(server, conn, kwargs, error, words):
    from openhcs_omero_lib.api import run_pipeline

    before, calls = snapshot(server.store), collections.Counter(server.calls)
    with pytest.raises(Exception) as err:
        run_pipeline(server.plate_id, "nuclei_count", conn=conn, **{"workers": 1, **kwargs})
    assert error in [cls.__name__ for cls in type(err.value).__mro__], repr(err.value)
    for word in words:
        assert word in str(err.value), str(err.value)
    assert calls_since(server, calls)["RawPixelsStore.getPlane"] == 0
    assert created_since(before, snapshot(server.store)) == {}


def test_dask_computes_the_same_rows_on_a_folder_and_on_an_omero_plate(server, conn, tiny_plate, local):
    """dask="local:2" starts a cluster for the run and stops it after; the rows are those
    of worker processes, and the summary says who computed."""
    import psutil

    from openhcs_omero_lib.api import run_pipeline

    children = {p.pid for p in psutil.Process().children(recursive=True)}
    on_folder = run_pipeline(tiny_plate, "nuclei_count", dask="local:2")
    pd.testing.assert_frame_equal(on_folder.images, local.images, check_exact=True)
    assert on_folder.summary["executor"] == "dask" and on_folder.summary["workers"] == 2
    on_plate = run_pipeline(server.plate_id, "nuclei_count", conn=conn, attach=(), dask="local:1")
    assert on_plate.summary["executor"] == "dask"
    pd.testing.assert_frame_equal(on_plate.images.drop(columns=["image_id"]), local.images, check_exact=True)
    # multiprocessing's resource tracker, started once per process, outlives any run
    left = [p.cmdline() for p in psutil.Process().children(recursive=True)
            if p.pid not in children and p.is_running() and "resource_tracker" not in " ".join(p.cmdline())]
    assert not left, f"the run's cluster is still running: {left}"


def test_a_bad_plate_or_a_local_option_without_conn(server, conn, tiny_plate):
    from openhcs_omero_lib.api import PipelineError, TargetError, run_pipeline

    with pytest.raises(TargetError, match="expected a plate, got Well:7"):
        run_pipeline("Well:7", "nuclei_count", conn=conn)
    with pytest.raises(ValueError, match="attach is for OMERO plates"):
        run_pipeline(tiny_plate, "nuclei_count", attach="plate")
    with pytest.raises(ValueError, match="the plate is a local folder"):
        run_pipeline(server.plate_id, "nuclei_count")
    with pytest.raises(PipelineError, match="neither a preset"):
        run_pipeline(server.plate_id, "no_such_pipeline", conn=conn)
    before = iquery_calls(server)
    with pytest.raises(PipelineError, match="min_nucleus_size=0"):
        run_pipeline(server.plate_id, "nuclei_count", conn=conn, min_nucleus_size=0)
    assert iquery_calls(server) == before  # refused before asking the server anything


def test_a_channel_by_name_is_the_plates_channel_of_that_name(server, conn):
    from openhcs_omero_lib.api import run_pipeline

    by_name = run_pipeline(server.plate_id, "nuclei_count", conn=conn, workers=1, attach=(), nuclear_channel="fitc")
    by_index = run_pipeline(server.plate_id, "nuclei_count", conn=conn, workers=1, attach=(), nuclear_channel=2)
    pd.testing.assert_frame_equal(by_name.images, by_index.images)
    assert by_name.summary["pipeline"]["spec"]["steps"][0]["input"] == "ch2"


# ---- the script's dialog -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run_params(tmp_path_factory):
    """Run_HCS_Pipeline's parameters as omero.scripts parses them."""
    with pytest.MonkeyPatch.context() as mp:
        manager = isolate_omero(mp, tmp_path_factory.mktemp("tuning-dialog"))
        try:
            return parse_script_text(RUN_SCRIPT.read_text())
        finally:
            os.environ.pop("ICE_CONFIG", None)
            manager.cleanup()


def _received(params, plate_id: int, chosen: dict) -> dict[str, dict]:
    from omero_clients import insight_inputs, script_receives, web_form, web_inputs, web_script_ui

    web = web_inputs(params, web_form(web_script_ui(params, {"Plate": str(plate_id)}), chosen))
    insight = insight_inputs(params, {"Data_Type": "Plate", "IDs": [plate_id], **chosen})
    return {"OMERO.web": script_receives(params, web), "OMERO.insight": script_receives(params, insight)}


def test_every_presets_parameter_is_in_the_dialog_with_its_bounds(run_params):
    from omero.rtypes import unwrap

    from openhcs_omero_lib.api import pipeline_parameters, presets
    from openhcs_omero_lib.omero.tuning_params import MAX_CHILDREN, dialog_name

    inputs = run_params.inputs
    declared = {name: info for preset in presets() for name, info in pipeline_parameters(preset).items()}
    tuning = [key for key, p in inputs.items() if p.grouping.startswith("3.") and key != "Pipeline_File_Annotation"]
    assert sorted(tuning) == sorted(dialog_name(n) for n in declared)
    assert len(tuning) <= MAX_CHILDREN and all(len(inputs[k].grouping) == 3 for k in tuning)  # "3.2".."3.9"
    for name, info in declared.items():
        param = inputs[dialog_name(name)]
        assert param.optional, name
        if info.kind == "integer":
            assert unwrap(param.min) == info.minimum and unwrap(param.max) == info.maximum, name
        if info.kind == "choice":
            assert unwrap(param.values) == [""] + list(info.choices) and unwrap(param.prototype) == "", name


def test_an_untouched_dialog_tunes_nothing(server, conn, run_params):
    from openhcs_omero_lib.omero.tuning_params import values_from_inputs

    for client, received in _received(run_params, server.plate_id, {}).items():
        assert values_from_inputs(received) == {}, client


def test_the_dialogs_values_reach_the_run(server, conn, run_params, tiny_plate):
    """What each client sends for tuned parameters is what the pipeline runs with; a
    Float's 32-bit trip leaves 1.3 as 1.3."""
    from openhcs_omero_lib.api import read_results
    from openhcs_omero_lib.omero.script_support import run_pipeline_script

    chosen = {"Nuclear_Channel": "FITC", "Min_Nucleus_Size": 25, "Smoothing": 1.3, "Threshold_Method": "li"}
    for client, received in _received(run_params, server.plate_id, chosen).items():
        pid = server.import_plate(tiny_plate, name=f"dialog-{client}")
        outcome = run_pipeline_script(conn, {**received, "IDs": [pid], "Workers": 1})
        assert outcome.ok, (client, outcome.message)
        steps = read_results(conn, pid, "nuclei_count").summary["pipeline"]["spec"]["steps"]
        assert (steps[0]["input"], steps[1]["sigma"], steps[2]["method"], steps[4]["min_size"]) == \
            ("ch2", 1.3, "li", 25), client


def test_a_dialog_value_the_pipeline_does_not_have_is_refused(server, conn):
    from openhcs_omero_lib.omero.script_support import run_pipeline_script

    before, calls = snapshot(server.store), collections.Counter(server.calls)
    for inputs, words in (({"Ring_Width": 3.0}, "pipeline 'nuclei_count' has no parameter 'ring_width'"),
                          ({"Nuclear_Channel": "Cy5"}, "no channel of that name"),
                          ({"Smoothing": 0.0}, "smoothing=0.0: Input should be greater than 0")):
        outcome = run_pipeline_script(conn, {"Data_Type": "Plate", "IDs": [server.plate_id], "Workers": 1, **inputs})
        assert not outcome.ok and outcome.message.startswith("Nothing attached:") and words in outcome.message, \
            outcome.message
    assert calls_since(server, calls)["RawPixelsStore.getPlane"] == 0
    assert created_since(before, snapshot(server.store)) == {}


# ---- the command line ------------------------------------------------------------------------------------

@pytest.fixture
def cli_env(server, monkeypatch):
    monkeypatch.setenv("OMERO_USER", server.user.name)
    monkeypatch.setenv("OMERO_PASSWORD", server.password)
    for var in ("OMERO_SESSION_KEY", "OMERO_GROUP", "OMERO_HOST", "OMERO_PORT"):
        monkeypatch.delenv(var, raising=False)
    return ["--host", server.host, "--port", str(server.port), "--router", server.router]


def test_run_on_an_omero_plate_with_set(server, conn, tiny_plate, cli_env, capsys):
    from openhcs_omero_lib.api import read_results
    from openhcs_omero_lib.cli.app import main

    pid = server.import_plate(tiny_plate, name="cli-set")
    code = main(["run", "--omero-plate", str(pid), "--workers", "1", "--no-progress", "--set", "nuclear_channel=FITC",
                 "--set", "max_nucleus_size=150", *cli_env])
    assert code == 0, capsys.readouterr().err
    steps = read_results(conn, pid, "nuclei_count").summary["pipeline"]["spec"]["steps"]
    assert steps[0]["input"] == "ch2" and steps[6]["max_area"] == 150
    calls = collections.Counter(server.calls)
    assert main(["run", "--omero-plate", str(pid), "--set", "nuclear_channel=Cy5", *cli_env]) == 2
    assert "no channel of that name" in capsys.readouterr().err
    assert main(["run", "--omero-plate", str(pid), "--set", "colour=red", *cli_env]) == 2
    assert "no parameter 'colour'" in capsys.readouterr().err
    assert calls_since(server, calls)["RawPixelsStore.getPlane"] == 0


def test_launch_sends_set_as_the_dialogs_parameters(server, conn, tiny_plate, cli_env, capsys):
    """Through the stand-in's script service and Processor, as a real server runs it."""
    from openhcs_omero_lib.api import read_results
    from openhcs_omero_lib.cli.app import main

    server.install_script(RUN_SCRIPT)
    pid = server.import_plate(tiny_plate, name="launch-set")
    code = main(["launch", "--plate", str(pid), "--workers", "1", "--no-progress", "--set", "nuclear_channel=2",
                 "--set", "smoothing=1.5", "--set", "threshold_method=triangle", *cli_env])
    assert code == 0, capsys.readouterr()
    steps = read_results(conn, pid, "nuclei_count").summary["pipeline"]["spec"]["steps"]
    assert (steps[0]["input"], steps[1]["sigma"], steps[2]["method"]) == ("ch2", 1.5, "triangle")
    jobs = len(server.store.all("ScriptJob"))
    for bad, words in ((["--set", "ring_width=2"], "no parameter 'ring_width'"),
                       (["--set", "smoothing=soft"], "smoothing='soft'")):
        assert main(["launch", "--plate", str(pid), *bad, *cli_env]) == 2
        assert words in capsys.readouterr().err
    assert len(server.store.all("ScriptJob")) == jobs  # nothing started
