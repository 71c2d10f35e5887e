"""Bad requests to Run_HCS_Pipeline: one clear message, nothing attached.

Most cases call what the script calls (``script_support.run_pipeline_script``) on a
connection of the test; one goes through the script as the server runs it, and the
dialog values the script's parameters forbid are refused before it runs.
"""

from __future__ import annotations

import collections

import pytest

from omero_fixtures import RUN_SCRIPT, calls_since, created_since, gateway, snapshot, standin

MISSING = 987_654_321


@pytest.fixture(scope="module")
def server(small_plate):
    with standin() as server:
        server.plate_id = server.import_plate(small_plate.folder)
        yield server


def _request(server, conn, **params):
    """Run the script's function; return (outcome, calls made, objects created)."""
    from openhcs_omero_lib.omero.script_support import run_pipeline_script

    params = {"Data_Type": "Plate", "IDs": [server.plate_id], "Workers": 1, **params}
    before, calls = snapshot(server.store), collections.Counter(server.calls)
    outcome = run_pipeline_script(conn, params)
    return outcome, calls_since(server, calls), created_since(before, snapshot(server.store))


def _refused(outcome, created, *mentions):
    message = outcome.message
    assert not outcome.ok, message
    assert outcome.file_annotation is None
    assert message.startswith("Nothing attached: "), message
    assert "\n" not in message and "Traceback" not in message
    for text in mentions:
        assert str(text) in message, (text, message)
    assert created == {}, f"left behind: {created}"


def _spec_annotation(server, text: str | bytes, name: str) -> int:
    data = text.encode() if isinstance(text, str) else text
    return server.add_file_annotation(data, name, mimetype="text/yaml")


def _ch3_spec() -> str:
    from openhcs_omero_lib.pipeline.loading import preset_text

    text = preset_text("nuclei_count")
    assert "input: ch1" in text
    return text.replace("input: ch1", "input: ch3")


def test_missing_plate(server, conn):
    outcome, calls, created = _request(server, conn, IDs=[MISSING])
    _refused(outcome, created, MISSING, "Plate")
    assert calls["RawPixelsStore.getPlane"] == 0


def test_dataset_given_as_plate(server, conn):
    dataset = server.add_dataset("not a plate")
    outcome, calls, created = _request(server, conn, IDs=[dataset])
    _refused(outcome, created, dataset, "Dataset")


def test_plate_given_as_screen(server, conn):
    outcome, calls, created = _request(server, conn, Data_Type="Screen", IDs=[server.plate_id])
    _refused(outcome, created, server.plate_id, "Plate")


def test_a_bad_id_after_a_good_one_stops_everything_before_computing(server, conn):
    outcome, calls, created = _request(server, conn, IDs=[server.plate_id, MISSING])
    _refused(outcome, created, MISSING)
    assert calls["RawPixelsStore.getPlane"] == calls["ServiceFactory.createRawPixelsStore"] == 0


@pytest.mark.parametrize("content, name", [
    (bytes(range(256)) * 4, "junk.bin"),
    (b"\xff\xfe\x00\x00garbage\x80\x81", "spec.yaml"),
], ids=["binary", "undecodable"])
def test_pipeline_annotation_that_is_not_text(server, conn, content, name):
    aid = _spec_annotation(server, content, name)
    outcome, calls, created = _request(server, conn, Pipeline_File_Annotation=aid)
    _refused(outcome, created, aid)
    assert "Error" not in outcome.message  # no Python exception names for the user
    assert calls["RawPixelsStore.getPlane"] == 0


@pytest.mark.parametrize("text", [
    "name: broken\nsteps: [\n  {op: gaussian, input: ch1\n",
    "name: x\nload: {channels: all}\nsteps:\n  - op: no_such_step\n    input: ch1\n",
    "just a string",
], ids=["invalid-yaml", "unknown-step", "not-a-mapping"])
def test_pipeline_annotation_that_is_not_a_valid_spec(server, conn, text):
    aid = _spec_annotation(server, text, "pipeline.yaml")
    outcome, calls, created = _request(server, conn, Pipeline_File_Annotation=aid)
    _refused(outcome, created, aid)
    assert calls["RawPixelsStore.getPlane"] == 0


def test_pipeline_annotation_that_does_not_exist(server, conn):
    outcome, calls, created = _request(server, conn, Pipeline_File_Annotation=MISSING)
    _refused(outcome, created, MISSING)


def test_pipeline_reading_a_channel_the_plate_lacks(server, conn, small_plate):
    assert small_plate.config.channels == 2
    aid = _spec_annotation(server, _ch3_spec(), "ch3.yaml")
    outcome, calls, created = _request(server, conn, Pipeline_File_Annotation=aid)
    _refused(outcome, created, "ch3", server.plate_id)
    assert calls["RawPixelsStore.getPlane"] == 0


def test_plate_the_user_may_read_but_not_annotate(server, small_plate):
    """A read-only group: alice sees bob's plate, may not annotate it."""
    read_only = server.add_group("read-only", "rwr---")
    bob = server.add_user("bob", "bob-password", [read_only])
    pid = server.import_plate(small_plate.folder, owner=bob, group=read_only)
    server.user.groups.append(read_only.id)  # alice becomes a member
    with gateway(server) as conn:
        from openhcs_omero_lib.omero.plate import PlateCache, load_plate

        assert load_plate(conn, pid, cache=PlateCache()).group_id == read_only.id  # she can read it
        outcome, calls, created = _request(server, conn, IDs=[pid])
    _refused(outcome, created)
    assert "permission" in outcome.message.lower()
    assert calls["RawPixelsStore.getPlane"] == 0  # refused before computing
    for stateful in ("RawFileStore", "RawPixelsStore", "Table", "Handle"):
        assert server.open_stateful[stateful] == 0, stateful


def test_choices_that_attach_nothing_are_refused_clearly(server, conn):
    outcome, calls, created = _request(server, conn, Attach_To="Plate", CSV=False, JSON=False,
                                       OMERO_Table=False, Key_Value_Pairs=True)
    _refused(outcome, created)
    assert "IndexError" not in outcome.message
    assert "Attach_To" in outcome.message or "Key_Value_Pairs" in outcome.message
    assert calls["RawPixelsStore.getPlane"] == 0  # refused before computing


# ---- through the script ------------------------------------------------------------------------

def test_dataset_given_as_plate_through_the_script(server):
    from omero.rtypes import rlist, rlong, rstring

    from openhcs_omero_lib.testing.processor import run_script

    dataset = server.add_dataset("also not a plate")
    before = snapshot(server.store)
    run = run_script(server, RUN_SCRIPT, {"Data_Type": rstring("Plate"), "IDs": rlist([rlong(dataset)])})
    assert run.errors == [] and run.returncode == 0, run.stderr[-2000:]
    message = run.output("Message")
    assert message.startswith("Nothing attached") and "Dataset" in message and str(dataset) in message
    assert run.output("File_Annotation") is None
    assert "Traceback" not in run.stderr
    assert created_since(before, snapshot(server.store)) == {}


@pytest.mark.parametrize("inputs, parameter", [
    ({"Workers": 0}, "Workers"),
    ({"Workers": 100}, "Workers"),
    ({"Data_Type": "Dataset"}, "Data_Type"),
    ({"IDs": None}, "IDs"),
], ids=["workers-0", "workers-100", "data-type-dataset", "no-ids"])
def test_dialog_values_outside_the_parameters_never_run(server, inputs, parameter):
    from omero.rtypes import rint, rlist, rlong, rstring

    from openhcs_omero_lib.testing.processor import run_script

    values = {"Data_Type": rstring("Plate"), "IDs": rlist([rlong(server.plate_id)])}
    for key, value in inputs.items():
        if value is None:
            values.pop(key)
        else:
            values[key] = rint(value) if isinstance(value, int) else rstring(value)
    before, calls = snapshot(server.store), collections.Counter(server.calls)
    run = run_script(server, RUN_SCRIPT, values)
    assert run.errors, "validate_inputs accepted it"
    assert any(parameter in e for e in run.errors), run.errors
    assert run.returncode != 0 and run.outputs == {}
    delta = calls_since(server, calls)
    assert delta["ISession.getInputs"] == 0  # the script never asked for its inputs: it did not run
    assert created_since(before, snapshot(server.store)) == {}
