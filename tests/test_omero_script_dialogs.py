"""The scripts' dialogs as OMERO.web and OMERO.insight build them from the parsed
parameters (``omero_clients`` ports the clients' code), and what the script receives
from each dialog.

A Bool parameter with children switches them off in OMERO.insight, which then sends
their defaults instead of what the user ticked (omero-documentation
``developers/scripts/style-guide.rst``, "Parameter grouping"; omero-insight
``ScriptComponent.getValue``, ``ParamData.setValueToPass``). So a Bool may only be the
parent of parameters that mean nothing without it.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from omero_clients import (
    bool_parents,
    insight_inputs,
    insight_tree,
    script_receives,
    web_form,
    web_inputs,
    web_script_ui,
)
from omero_helpers import isolate_omero, parse_script_text

SCRIPTS = sorted(p for p in (Path(__file__).resolve().parents[1] / "scripts").rglob("*.py") if p.name != "__init__.py")
OUTPUTS = ("CSV", "JSON", "OMERO_Table", "Key_Value_Pairs")

# A Bool parent's children, where a script has one: each child means nothing when the
# parent is unticked, so that the default sent in its place does no harm.
DEPENDS_ON: dict[str, dict[str, str]] = {"Run_HCS_Pipeline.py": {"Heat_Map_Measurement": "Heat_Map",
                                                                "Max_ROIs_Per_Image": "Save_ROIs"},
                                         "Describe_Plate.py": {},
                                         "Delete_HCS_Results.py": {}}

# The example of the style guide's "Parameter grouping", with defaults.
STYLE_GUIDE_EXAMPLE = '''
import omero.scripts as scripts
client = scripts.client("Scalebar.py", "the style guide's example",
    scripts.Bool("Show_Scalebar", grouping="10", default=True),
    scripts.Int("Scalebar_Size", grouping="10.1", default=5),
    scripts.String("Scalebar_Colour", grouping="10.2", default="White"),
    scripts.Bool("Other", grouping="11", default=False))
'''


@pytest.fixture(scope="module")
def parsed(tmp_path_factory):
    """Each script's parameters (and the style guide's example) as ``omero.scripts``
    parses them, isolated like ``omero_sandbox``."""
    with pytest.MonkeyPatch.context() as mp:
        manager = isolate_omero(mp, tmp_path_factory.mktemp("dialogs"))
        try:
            out = {p.name: parse_script_text(p.read_text()) for p in SCRIPTS}
            out["style guide"] = parse_script_text(STYLE_GUIDE_EXAMPLE)
        finally:
            os.environ.pop("ICE_CONFIG", None)
            manager.cleanup()
    return out


def _web_tree(params) -> list[tuple[str, list[str]]]:
    return [(i["key"], [c["key"] for c in i["children"]]) for i in web_script_ui(params)]


# ---- the ported dialogs do what the clients do ------------------------------------------------------

def test_the_ported_dialogs_nest_and_switch_off_as_the_style_guide_says(parsed):
    params = parsed["style guide"]
    assert _web_tree(params) == [("Show_Scalebar", ["Scalebar_Size", "Scalebar_Colour"]), ("Other", [])]
    assert insight_tree(params) == {"Show_Scalebar": ["Scalebar_Size", "Scalebar_Colour"]}
    assert bool_parents(params) == {"Show_Scalebar": ["Scalebar_Size", "Scalebar_Colour"]}
    chosen = {"Show_Scalebar": False, "Scalebar_Size": 9, "Scalebar_Colour": "Red"}
    # OMERO.insight switches the children off and sends their defaults in their place...
    assert script_receives(params, insight_inputs(params, chosen)) == {
        "Show_Scalebar": False, "Scalebar_Size": 5, "Scalebar_Colour": "White", "Other": False}
    # ...OMERO.web only nests them, and sends what the form shows.
    received = script_receives(params, web_inputs(params, web_form(web_script_ui(params), chosen)))
    assert received == {"Show_Scalebar": False, "Scalebar_Size": 9, "Scalebar_Colour": "Red", "Other": False}


# ---- our scripts -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_no_bool_parent_switches_off_what_does_not_depend_on_it(path, parsed):
    params = parsed[path.name]
    declared = DEPENDS_ON[path.name]
    wrong = {parent: [c for c in children if declared.get(c) != parent]
             for parent, children in bool_parents(params).items()}
    assert {p: c for p, c in wrong.items() if c} == {}, \
        "unticking these Bool parameters would switch off (and reset) parameters that do not depend on them"


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_dialogs_show_the_parameters_in_their_grouping_order(path, parsed):
    """OMERO.web sorts groupings as strings: "10" would come before "2"."""
    params = parsed[path.name]
    shown = [key for key, _ in _web_tree(params)]
    top = [key for key, p in params.inputs.items() if "." not in p.grouping]
    assert shown == sorted(top, key=lambda k: [int(x) for x in params.inputs[k].grouping.split(".")])
    assert shown[:2] == ["Data_Type", "IDs"]


def test_run_dialog_groups_each_output_under_where_it_goes(parsed):
    params = parsed["Run_HCS_Pipeline.py"]
    web = dict(_web_tree(params))
    assert web["Attach_To"] == list(OUTPUTS)
    from openhcs_omero_lib.omero.tuning_params import preset_parameters

    tuning = [p.key for p in preset_parameters().values()]  # optional, each a preset's parameter
    assert web["Pipeline"] == ["Pipeline_File_Annotation", *tuning]
    assert insight_tree(params)["Pipeline"] == ["Pipeline_File_Annotation", *tuning]
    assert insight_tree(params)["Attach_To"] == list(OUTPUTS)
    shown = [key for key in web if key in ("Data_Type", "IDs", "Pipeline", "Workers", "Attach_To",
                                           "Replace_Previous_Results")]
    assert shown == ["Data_Type", "IDs", "Pipeline", "Workers", "Attach_To", "Replace_Previous_Results"]


def test_the_pictures_are_chosen_under_their_own_checkboxes(parsed):
    params = parsed["Run_HCS_Pipeline.py"]
    web = dict(_web_tree(params))
    assert web["Heat_Map"] == ["Heat_Map_Measurement"] and web["Save_ROIs"] == ["Max_ROIs_Per_Image"]
    assert insight_tree(params)["Save_ROIs"] == ["Max_ROIs_Per_Image"]
    assert list(web)[-2:] == ["Heat_Map", "Save_ROIs"]  # after Replace_Previous_Results, as numbered
    for heat_map, save_rois in itertools.product((True, False), repeat=2):
        chosen = {"Heat_Map": heat_map, "Heat_Map_Measurement": "nuclei_area_mean", "Save_ROIs": save_rois,
                  "Max_ROIs_Per_Image": 50}
        for client, received in _dialogs(params, 51, chosen).items():
            assert received["Heat_Map"] is heat_map and received["Save_ROIs"] is save_rois, client
            if save_rois or client == "OMERO.web":
                assert received["Max_ROIs_Per_Image"] == 50, client
            if heat_map or client == "OMERO.web":
                assert received["Heat_Map_Measurement"] == "nuclei_area_mean", client


def _dialogs(params, plate_id: int, chosen: dict):
    """What the script receives from each dialog for a plate selection and the user's choices."""
    web = web_inputs(params, web_form(web_script_ui(params, {"Plate": str(plate_id)}), chosen))
    insight = insight_inputs(params, {"Data_Type": "Plate", "IDs": [plate_id], **chosen})
    return {"OMERO.web": script_receives(params, web), "OMERO.insight": script_receives(params, insight)}


def test_the_run_script_receives_every_choice_of_outputs_from_both_dialogs(parsed):
    params = parsed["Run_HCS_Pipeline.py"]
    for ticks in itertools.product((True, False), repeat=len(OUTPUTS) + 1):
        chosen = dict(zip(OUTPUTS + ("Replace_Previous_Results",), ticks))
        for client, received in _dialogs(params, 51, chosen).items():
            assert {k: received[k] for k in chosen} == chosen, client
            assert received["IDs"] == [51] and received["Data_Type"] == "Plate", client


def test_an_untouched_dialog_sends_the_scripts_own_defaults(parsed):
    from openhcs_omero_lib.omero.script_support import DEFAULTS

    params = parsed["Run_HCS_Pipeline.py"]
    for client, received in _dialogs(params, 51, {}).items():
        assert {k: received.get(k) for k in DEFAULTS} == DEFAULTS, client
        assert "Pipeline_File_Annotation" not in received, client


@pytest.mark.parametrize("name", ["Describe_Plate.py", "Delete_HCS_Results.py"])
def test_describe_and_delete_dialogs_hold_the_selection_only(name, parsed):
    params = parsed[name]
    assert _web_tree(params) == [("Data_Type", []), ("IDs", [])]
    assert insight_tree(params) == {}
    for client, received in _dialogs(params, 51, {}).items():
        assert received == {"Data_Type": "Plate", "IDs": [51]}, client
