"""Tuning a pipeline without writing YAML: the parameters a spec declares, their types
and bounds (the steps' own), and that a tuned run is the run of the edited spec, from
Python and from the command line. No OMERO here (see test_api_run for the dialog)."""

from __future__ import annotations

import contextlib
import io

import pandas as pd
import pytest
import yaml

from openhcs_omero_lib.cli.app import main
from openhcs_omero_lib.pipeline.loading import PipelineError, parse_spec, preset_names, preset_text
from openhcs_omero_lib.pipeline.params import describe, tune
from openhcs_omero_lib.pipeline.spec import STEP_TYPES

SPEC = """\
name: tunable
steps:
  - {op: gaussian, input: ch1, output: smooth, sigma: 1.0}
  - {op: threshold, input: smooth, output: mask}
  - {op: label, input: mask, output: nuclei}
  - {op: filter_objects, input: nuclei, output: nuclei, exclude_border: true}
  - {op: measure_objects, labels: nuclei, intensity: [ch1]}
parameters:
  channel: {op: gaussian, field: input}
"""


def _spec(extra: str = "") -> str:
    return SPEC + extra


def _preset(name: str):
    return parse_spec(preset_text(name), name)


def _edited(name: str, edits: dict[tuple[str, str], object], load_channels=None):
    """The preset's YAML edited by hand: what tuning must be equivalent to."""
    data = yaml.safe_load(preset_text(name))
    for step in data["steps"]:
        for (op, field), value in edits.items():
            if step["op"] == op:
                step[field] = value
    if load_channels is not None:
        data["load"]["channels"] = load_channels
    return data


# ---- what the presets declare ------------------------------------------------------------------

def test_every_preset_declares_the_nuclear_channel_smoothing_threshold_and_sizes():
    for name in preset_names():
        params = describe(_preset(name))
        assert {"nuclear_channel", "smoothing", "threshold_method", "min_nucleus_size",
                "max_nucleus_size"} <= set(params), name
        assert params["nuclear_channel"].kind == "channel" and params["nuclear_channel"].default == 1
        assert params["max_nucleus_size"].default is None and params["max_nucleus_size"].optional


def test_types_and_bounds_are_the_steps_own():
    """Each parameter carries the pydantic field's type and bounds of the step it sets,
    so a parameter accepts exactly what the spec file would."""
    params = describe(_preset("nuclei_count"))
    for info in params.values():
        op, field = info.target.split(".")
        model_field = STEP_TYPES[op].model_fields[field]
        bounds = {type(m).__name__: m for m in model_field.metadata}
        if info.kind in ("integer", "number"):
            if "Ge" in bounds:
                assert (info.minimum, info.exclusive_minimum) == (bounds["Ge"].ge, False), info.name
            if "Gt" in bounds:
                assert (info.minimum, info.exclusive_minimum) == (bounds["Gt"].gt, True), info.name
            if "Le" in bounds:
                assert info.maximum == bounds["Le"].le, info.name
    assert params["smoothing"].kind == "number" and params["smoothing"].default == 1.0
    assert params["min_nucleus_size"].kind == "integer" and params["min_nucleus_size"].minimum == 1
    assert params["threshold_method"].choices == ("otsu", "li", "triangle", "yen", "mean")


def test_a_preset_with_nothing_tuned_is_unchanged():
    spec = _preset("nuclei_count")
    assert tune(spec, {}) is spec


# ---- setting values ----------------------------------------------------------------------------

def test_tuning_is_editing_the_spec():
    spec = _preset("nuclear_translocation")
    tuned = tune(spec, {"nuclear_channel": 2, "smoothing": "2.5", "min_nucleus_size": 60, "max_nucleus_size": 900,
                        "threshold_method": "li", "ring_width": 3})
    edited = _edited("nuclear_translocation", {
        ("subtract_background", "input"): "ch2", ("gaussian", "sigma"): 2.5, ("remove_small_objects", "min_size"): 60,
        ("filter_objects", "max_area"): 900, ("threshold", "method"): "li", ("ring", "distance"): 3.0})
    assert tuned == parse_spec(yaml.safe_dump(edited))


def test_a_channel_by_index_name_or_chN_and_load_channels_follow():
    spec = _preset("nuclear_translocation")  # loads channels [1, 2]
    names = ["GFP", "Cy5", "DAPI"]
    by_name = tune(spec, {"nuclear_channel": "dapi"}, names)
    assert by_name.steps[0].input == "ch3" and by_name.load.channels == [1, 2, 3]
    assert tune(spec, {"nuclear_channel": "ch3"}) == tune(spec, {"nuclear_channel": 3}) == \
        tune(spec, {"nuclear_channel": "3"}, names) == by_name


@pytest.mark.parametrize("values, names, words", [
    ({"min_nucleus_size": 0}, None, ["min_nucleus_size=0", "greater than or equal to 1"]),
    ({"smoothing": 0}, None, ["smoothing=0", "greater than 0"]),
    ({"smoothing": 51}, None, ["smoothing=51", "less than or equal to 50"]),
    ({"min_nucleus_size": "big"}, None, ["min_nucleus_size='big'", "valid integer"]),
    ({"min_nucleus_size": 40.5}, None, ["min_nucleus_size=40.5"]),
    ({"threshold_factor": True}, None, ["threshold_factor=True"]),
    ({"threshold_method": "manual"}, None, ["threshold_method='manual'", "otsu, li, triangle, yen, mean"]),
    ({"sigma": 2}, None, ["no parameter 'sigma'", "nuclear_channel", "smoothing"]),
    ({"nuclear_channel": 0}, None, ["nuclear_channel=0", "numbered from 1"]),
    ({"nuclear_channel": "DAPI"}, None, ["nuclear_channel='DAPI'", "names are looked up on a plate"]),
    ({"nuclear_channel": "Cy5"}, ["DAPI", "FITC"], ["'Cy5'", "no channel of that name", "1 (DAPI), 2 (FITC)"]),
    ({"nuclear_channel": 3}, ["DAPI", "FITC"], ["nuclear_channel=3", "has 2 channels"]),
])
def test_a_bad_value_is_refused_with_its_name_and_why(values, names, words):
    with pytest.raises(PipelineError) as err:
        tune(_preset("nuclei_count"), values, names)
    message = str(err.value)
    assert message.startswith("pipeline 'nuclei_count'")
    for word in words:
        assert word in message, message


def test_a_spec_file_may_declare_parameters_and_python_tunes_them():
    from openhcs_omero_lib.api import load_pipeline, pipeline_parameters

    spec = parse_spec(_spec())
    assert list(pipeline_parameters(spec)) == ["channel"]
    assert load_pipeline(yaml.safe_load(_spec()), channel=2).steps[0].input == "ch2"


@pytest.mark.parametrize("declaration, words", [
    ("  size: {op: open, field: radius}", ["parameters.size", "no 'open' step"]),
    ("  size: {op: gaussian, field: radius}", ["parameters.size", "no field 'radius'", "sigma"]),
    ("  size: {op: gaussian, field: output}", ["no field 'output'"]),
    ("  size: {op: filter_objects, field: exclude_border}", ["filter_objects.exclude_border", "not a number"]),
    ("  size: {op: threshold, field: input}", ["only a channel", "'smooth'"]),
    ("  size: {op: threshold, field: method, choices: [otsu, magic]}", ["choices must be some of"]),
    ("  size: {op: gaussian, field: sigma, colour: red}", ["unknown key"]),
])
def test_a_bad_declaration_is_refused_where_it_is(declaration, words):
    with pytest.raises(PipelineError) as err:
        parse_spec(_spec(declaration + "\n"), "spec.yaml")
    message = str(err.value)
    assert message.startswith("spec.yaml:")
    for word in words:
        assert word in message, message


# ---- a tuned run is the run of the edited spec --------------------------------------------------

@pytest.fixture(scope="module")
def runs(small_plate):
    """The small plate with nuclei_count tuned (nuclear channel by name, sizes) from Python,
    with the same edits written into the spec, and untuned."""
    from openhcs_omero_lib.api import run_pipeline

    folder = small_plate.folder
    tuned = run_pipeline(folder, "nuclei_count", workers=1, nuclear_channel="fitc", min_nucleus_size=25,
                         max_nucleus_size=150)
    edited = run_pipeline(folder, _edited("nuclei_count", {("subtract_background", "input"): "ch2",
                                                           ("remove_small_objects", "min_size"): 25,
                                                           ("filter_objects", "max_area"): 150}), workers=1)
    plain = run_pipeline(folder, "nuclei_count", workers=1)
    return tuned, edited, plain


def test_tuning_from_python_gives_the_edited_specs_results(runs):
    tuned, edited, plain = runs
    pd.testing.assert_frame_equal(tuned.images, edited.images)
    pd.testing.assert_frame_equal(tuned.wells, edited.wells)
    assert tuned.summary["pipeline"]["spec"]["steps"][0]["input"] == "ch2"
    # ...and it changed something: nuclei from another channel, no nucleus above 150 px
    assert not tuned.images["nuclei_count"].equals(plain.images["nuclei_count"])
    assert (tuned.images["nuclei_area_mean"].dropna() <= 150).all()
    assert (plain.images["nuclei_area_mean"] > 150).any()


def test_the_command_sets_parameters_and_refuses_bad_ones(small_plate, tmp_path, runs):
    tuned = runs[0]
    out = tmp_path / "tuned"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(["run", str(small_plate.folder), "--workers", "1", "--no-progress", "--out", str(out),
                     "--set", "nuclear_channel=FITC", "--set", "min_nucleus_size=25", "--set", "max_nucleus_size=150"])
    assert code == 0
    written = pd.read_csv(out / "images.csv", keep_default_na=False)
    assert list(written["nuclei_count"]) == list(tuned.images["nuclei_count"])
    for bad, words in ((["--set", "max_nucleus_size=0"], "max_nucleus_size='0'"),
                       (["--set", "nuclear_channel=Cy5"], "no channel of that name"),
                       (["--set", "colour=red"], "no parameter 'colour'"),
                       (["--set", "min_nucleus_size"], "--set takes key=value")):
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = main(["run", str(small_plate.folder), "--workers", "1", "--no-progress",
                         "--out", str(tmp_path / "bad"), *bad])
        assert code == 2 and words in err.getvalue(), err.getvalue()
        assert not (tmp_path / "bad").exists()


def test_pipelines_lists_what_each_preset_lets_you_set(capsys):
    assert main(["pipelines"]) == 0
    out = capsys.readouterr().out
    assert "--set: nuclear_channel=1, smoothing=1.0, threshold_method=otsu" in out
    assert "ring_width=5.0" in out


def test_python_refuses_a_bad_value_before_opening_the_plate(tmp_path):
    """The value is checked first: the folder (which does not exist) is never opened."""
    from openhcs_omero_lib.api import run_pipeline

    with pytest.raises(PipelineError, match="min_nucleus_size=0"):
        run_pipeline(tmp_path / "no-such-plate", "nuclei_count", min_nucleus_size=0)
    with pytest.raises(ValueError, match="is not a folder"):
        run_pipeline(tmp_path / "no-such-plate", "nuclei_count", min_nucleus_size=20)
