"""Pipeline specs: presets, validation errors that name file, line and key, safe loading."""

from __future__ import annotations

import json

import pytest
import yaml

from openhcs_omero_lib.cli.app import main
from openhcs_omero_lib.pipeline.loading import PipelineError, parse_spec, preset_names, preset_text
from openhcs_omero_lib.pipeline.spec import MeasureObjects, PipelineSpec, bind_to_plate

GOOD = """\
name: test_pipe
description: a small test pipeline
steps:
  - op: gaussian
    input: ch1
    output: smooth
    sigma: 1.0
  - op: threshold
    input: smooth
    output: mask
  - op: label
    input: mask
    output: nuclei
  - op: measure_objects
    labels: nuclei
    intensity: [ch1]
"""


def _variant(old: str, new: str) -> str:
    assert GOOD.count(old) == 1, old
    return GOOD.replace(old, new)


# name -> (spec text, the offending line's text, "key" or "step", words the message must contain)
BAD = {
    "unknown_op": (_variant("op: threshold", "op: segment_everything"), "op: segment_everything", "key",
                   ["unknown step", "segment_everything", "op"]),
    "wrong_type": (_variant("sigma: 1.0", "sigma: abc"), "sigma: abc", "key", ["sigma", "number"]),
    "unknown_key_in_step": (_variant("    sigma: 1.0\n", "    sigma: 1.0\n    colour: red\n"), "colour: red", "key",
                            ["colour", "unknown key"]),
    "unknown_key_top_level": (_variant("description: a small test pipeline\n",
                                       "description: a small test pipeline\nauthor: me\n"), "author: me", "key",
                              ["author", "unknown key"]),
    "undefined_value": (_variant("input: mask", "input: maks"), "input: maks", "step",
                        ["maks", "'input'", "no earlier step"]),
    "mask_as_labels": (_variant("labels: nuclei", "labels: mask"), "labels: mask", "step",
                       ["'labels'", "mask", "needs labels"]),
    "invalid_yaml": (_variant("sigma: 1.0", "sigma: 1.0: 2"), "sigma: 1.0: 2", "key", ["YAML"]),
}


def expected_line(text: str, marker: str, kind: str) -> int:
    """1-based line of ``marker`` (kind ``key``) or of the ``- op:`` line of its step (``step``)."""
    lines = text.splitlines()
    index = next(i for i, line in enumerate(lines) if marker in line)
    if kind == "step":
        index = max(i for i in range(index + 1) if lines[i].lstrip().startswith("- op:"))
    return index + 1


def _validate(capsys, *argv: str) -> tuple[int, str, list[str]]:
    code = main(["validate", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


# ---- presets -------------------------------------------------------------------------

def test_presets_are_listed():
    assert {"nuclei_count", "nuclear_translocation"} <= set(preset_names())


@pytest.mark.parametrize("name", ["nuclei_count", "nuclear_translocation"])
def test_preset_parses_and_validates(name, capsys):
    spec = parse_spec(preset_text(name), name)
    assert spec.name == name
    assert spec.description
    raw = yaml.safe_load(preset_text(name))
    assert [s.op for s in spec.steps] == [s["op"] for s in raw["steps"]]
    code, out, err = _validate(capsys, name)
    assert code == 0 and err == []
    assert name in out and "valid" in out


def test_nuclei_count_preset_binds_intensity_all_to_the_plate_channels():
    spec = parse_spec(preset_text("nuclei_count"))
    assert spec.channels_read() == [1]
    for n_channels in (1, 3):
        bound = bind_to_plate(spec, n_channels)
        measure = [s for s in bound.steps if isinstance(s, MeasureObjects)]
        assert [m.intensity for m in measure] == [[f"ch{i}" for i in range(1, n_channels + 1)]]


def test_nuclear_translocation_preset_needs_two_channels():
    spec = parse_spec(preset_text("nuclear_translocation"))
    assert spec.channels_read() == [1, 2]
    bind_to_plate(spec, 2)
    with pytest.raises(ValueError, match="ch2"):
        bind_to_plate(spec, 1)


def _duplicate_keys(node: yaml.Node, found: list[tuple[str, int]]) -> list[tuple[str, int]]:
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key, value in node.value:
            if key.value in seen:
                found.append((key.value, key.start_mark.line + 1))
            seen.add(key.value)
            _duplicate_keys(value, found)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _duplicate_keys(item, found)
    return found


@pytest.mark.parametrize("name", ["nuclei_count"])
def test_preset_has_no_duplicate_keys(name):
    assert _duplicate_keys(yaml.compose(preset_text(name)), []) == []


def test_nuclear_translocation_preset_has_no_duplicate_keys():
    assert _duplicate_keys(yaml.compose(preset_text("nuclear_translocation")), []) == []


# ---- validate CLI ------------------------------------------------------------------------

def test_validate_good_file(tmp_path, capsys):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    code, out, err = _validate(capsys, str(path))
    assert code == 0, err
    assert err == []
    assert "test_pipe" in out and "valid" in out and "4 steps" in out


@pytest.mark.parametrize("case", sorted(BAD))
def test_validate_error_is_one_line_naming_file_and_key(case, tmp_path, capsys):
    text, marker, kind, words = BAD[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    code, out, err = _validate(capsys, str(path))
    assert code == 2
    assert out == ""
    assert len(err) == 1, err
    line = err[0]
    assert line.startswith("openhcs-omero: error: ")
    assert str(path) in line
    for word in words:
        assert word in line, (word, line)
    # A line number follows the file name.
    assert line.startswith(f"openhcs-omero: error: {path}:")
    assert line[len(f"openhcs-omero: error: {path}:"):].split(":")[0].isdigit(), line


@pytest.mark.parametrize("case", [
    c for c in sorted(BAD)])
def test_validate_error_names_the_offending_line(case, tmp_path, capsys):
    text, marker, kind, _ = BAD[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    code, _, err = _validate(capsys, str(path))
    assert code == 2 and len(err) == 1
    want = expected_line(text, marker, kind)
    assert err[0].startswith(f"openhcs-omero: error: {path}:{want}: "), (want, err[0])


def test_validate_missing_file(tmp_path, capsys):
    code, _, err = _validate(capsys, str(tmp_path / "nope.yaml"))
    assert code == 2
    assert len(err) == 1 and err[0].startswith("openhcs-omero: error: ")
    assert "nope.yaml" in err[0]


def test_validate_against_plate_with_too_few_channels(small_plate, tmp_path, capsys):
    from openhcs_omero_lib.plates.imagexpress import ImageXpressSource

    path = tmp_path / "ch3.yaml"
    path.write_text(GOOD.replace("input: ch1", "input: ch3").replace("[ch1]", "[ch3]"))
    # Alone the spec is fine: nothing says how many channels a plate has.
    code, _, err = _validate(capsys, str(path))
    assert code == 0, err
    code, out, err = _validate(capsys, str(path), "--plate", str(small_plate.folder))
    assert code == 2
    assert len(err) == 1 and err[0].startswith("openhcs-omero: error: ")
    assert "ch3" in err[0]
    channels = ImageXpressSource(small_plate.folder).layout.channels
    assert len(channels) == 2
    assert "2 channels" in err[0]
    for c in channels:
        assert f"ch{c.index} ({c.name})" in err[0]
    # The same spec reading ch2 fits.
    path.write_text(GOOD.replace("input: ch1", "input: ch2").replace("[ch1]", "[ch2]"))
    assert _validate(capsys, str(path), "--plate", str(small_plate.folder))[0] == 0


def test_validate_against_a_folder_that_is_not_a_plate(tmp_path, capsys):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    (tmp_path / "empty").mkdir()
    code, _, err = _validate(capsys, str(path), "--plate", str(tmp_path / "empty"))
    assert code == 2 and len(err) == 1 and "not an ImageXpress plate" in err[0]


def test_spec_as_json_file(tmp_path, capsys):
    data = yaml.safe_load(GOOD)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(data, indent=2))
    code, out, err = _validate(capsys, str(path))
    assert code == 0, err
    assert "test_pipe" in out
    # JSON errors get line numbers too.
    data["steps"][2]["op"] = "segment_everything"
    text = json.dumps(data, indent=2)
    path.write_text(text)
    code, _, err = _validate(capsys, str(path))
    assert code == 2 and len(err) == 1
    assert "unknown step" in err[0]
    assert f"{path}:{expected_line(text, 'segment_everything', 'key')}:" in err[0]


def test_spec_file_equals_preset_round_trip(tmp_path):
    """A spec dumped to JSON parses back to the same spec (specs are plain data)."""
    spec = parse_spec(preset_text("nuclear_translocation"))
    again = parse_spec(json.dumps(spec.model_dump(mode="json")))
    assert again == spec
    assert PipelineSpec.model_validate(spec.model_dump()) == spec


# ---- specs are data only ---------------------------------------------------------------

@pytest.mark.parametrize("tagged", [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/object/apply:builtins.open ['{marker}', 'w']",
    "!!python/object:argparse.Namespace {{x: 1}}",
    "!!python/name:os.system",
])
def test_python_tags_are_rejected(tagged, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "PWNED"
    text = GOOD.replace("a small test pipeline", tagged.format(marker=marker))
    with pytest.raises(PipelineError, match="not valid YAML"):
        parse_spec(text, "evil.yaml")
    path = tmp_path / "evil.yaml"
    path.write_text(text)
    code, _, err = _validate(capsys, str(path))
    assert code == 2 and len(err) == 1
    assert "evil.yaml:2:" in err[0]
    assert not marker.exists(), "a YAML tag ran code"


@pytest.mark.parametrize("op", ["eval", "exec", "__import__", "os.system", "ops.gaussian"])
def test_steps_name_only_whitelisted_operations(op):
    with pytest.raises(PipelineError, match="unknown step"):
        parse_spec(GOOD.replace("op: threshold", f"op: {op}"))


def test_spec_must_be_a_mapping():
    with pytest.raises(PipelineError, match="mapping"):
        parse_spec("- op: gaussian\n")


def test_spec_must_measure_something():
    text = GOOD.split("  - op: measure_objects")[0]
    with pytest.raises(PipelineError, match="measures nothing"):
        parse_spec(text)
