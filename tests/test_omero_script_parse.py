"""Every OMERO script of this project parses with real omero-py (as the server parses
scripts on upload), and declares the selection parameters OMERO clients fill in.

As a control, the same parse runs over the official scripts shipped in omero-scripts:
if those stopped parsing offline, the helpers (not our scripts) would be at fault.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest

from omero_helpers import isolate_omero, parse_script_file

ROOT = Path(__file__).resolve().parents[1]
OUR_SCRIPTS = sorted(p for p in (ROOT / "scripts").rglob("*.py") if p.name != "__init__.py")


def _official_scripts() -> list[Path]:
    import importlib.util

    spec = importlib.util.find_spec("omero")
    base = Path(spec.origin).parent
    return sorted(p for folder in base.glob("*_scripts") for p in folder.rglob("*.py") if p.name != "__init__.py")


OFFICIAL = _official_scripts()


def test_there_are_scripts_to_check():
    names = {p.name for p in OUR_SCRIPTS}
    assert {"Run_HCS_Pipeline.py", "Describe_Plate.py", "Delete_HCS_Results.py"} <= names
    folders = {p.parent.name for p in OFFICIAL}
    assert len(OFFICIAL) >= 15 and len(folders) >= 5, (len(OFFICIAL), folders)


@pytest.mark.parametrize("path", OUR_SCRIPTS, ids=lambda p: p.name)
def test_our_script_parses_and_declares_the_selection(path, omero_sandbox):
    from omero.rtypes import unwrap

    params = parse_script_file(path)
    assert params.name == path.name
    assert params.description.strip()
    data_type = params.inputs["Data_Type"]
    assert data_type.optional is False
    assert unwrap(data_type.values) == ["Plate", "Screen"]
    assert unwrap(data_type.prototype) == "Plate"
    ids = params.inputs["IDs"]
    assert ids.optional is False
    assert [type(v).__name__ for v in ids.prototype.getValue()] == ["RLongI"]
    assert params.authors and params.version


def test_run_script_parameters(omero_sandbox):
    from omero.rtypes import rlist, rlong, rstring, unwrap

    from omero_helpers import validation_errors
    from openhcs_omero_lib.omero.direct_pixels import ACCESS_CHOICES
    from openhcs_omero_lib.pipeline.presets import names

    params = parse_script_file(ROOT / "scripts" / "omero" / "openhcs" / "Run_HCS_Pipeline.py")
    inputs = params.inputs
    assert sorted(unwrap(inputs["Pipeline"].values)) == names()
    assert unwrap(inputs["Workers"].min) == 1 and unwrap(inputs["Workers"].max) >= 2
    assert unwrap(inputs["Attach_To"].values) == ["Plate", "Plate and wells", "Plate, wells and images"]
    assert inputs["Pipeline_File_Annotation"].optional is True
    # written out in the script (which imports nothing of the library's core) and in the
    # command line: the same choices as the library's, the first the default
    assert tuple(unwrap(inputs["Pixel_Access"].values)) == ACCESS_CHOICES
    assert unwrap(inputs["Pixel_Access"].prototype) == ACCESS_CHOICES[0]
    # a selection alone (every other input at its default) is valid
    assert validation_errors(params, {"Data_Type": rstring("Plate"), "IDs": rlist([rlong(1)])}) == ""


@pytest.fixture(scope="module")
def official_outcomes(tmp_path_factory):
    """Parse every official script once, isolated like ``omero_sandbox``:
    path -> JobParams, or the exception it raised."""
    import os

    outcomes = {}
    with pytest.MonkeyPatch.context() as mp:
        manager = isolate_omero(mp, tmp_path_factory.mktemp("official"))
        try:
            for path in OFFICIAL:
                try:
                    outcomes[path] = parse_script_file(path)
                except BaseException as exc:  # noqa: BLE001 - recorded per script
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    exc.formatted = traceback.format_exc()
                    outcomes[path] = exc
        finally:
            os.environ.pop("ICE_CONFIG", None)
            manager.cleanup()
    return outcomes


def _missing_module(exc: BaseException) -> str | None:
    return exc.name if isinstance(exc, ModuleNotFoundError) else None


@pytest.mark.parametrize("path", OFFICIAL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_official_script_parses(path, official_outcomes):
    import omero.grid

    outcome = official_outcomes[path]
    if isinstance(outcome, BaseException):
        missing = _missing_module(outcome)
        if missing:
            pytest.skip(f"{path.name} needs {missing}, which is not installed (unrelated to this project)")
        pytest.fail(f"{path.name} did not parse:\n{outcome.formatted}")
    assert isinstance(outcome, omero.grid.JobParams)
    assert outcome.name and outcome.inputs


def test_most_official_scripts_parse(official_outcomes):
    parsed = [p for p, o in official_outcomes.items() if not isinstance(o, BaseException)]
    assert len(parsed) >= 0.8 * len(official_outcomes), {
        p.name: repr(o) for p, o in official_outcomes.items() if isinstance(o, BaseException)}
    # most official scripts take the same selection parameters as ours
    with_selection = [p for p in parsed if {"Data_Type", "IDs"} <= set(official_outcomes[p].inputs)]
    assert len(with_selection) >= len(parsed) // 2


def test_the_command_lines_pixel_access_is_the_librarys():
    """``run`` and ``launch`` spell the choices out (the command line does not import
    omero-py to start): they are the library's, ``auto`` the default."""
    import argparse

    from openhcs_omero_lib.cli.app import build_parser
    from openhcs_omero_lib.omero.direct_pixels import ACCESS_CHOICES

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name in ("run", "launch"):
        [option] = [a for a in commands[name]._actions if "--pixel-access" in a.option_strings]
        assert tuple(option.choices) == ACCESS_CHOICES, name
        assert option.default in (None, ACCESS_CHOICES[0]), name
