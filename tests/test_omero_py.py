"""omero-py (with its compiled zeroc-ice) really imports and parses OMERO scripts.

No server is needed: ``omero.scripts.parse_text`` runs a script with
``omero.scripts.parse=only``, which makes ``scripts.client(...)`` raise ``ParseExit``
with the script's parameters before any connection is attempted.
"""

from __future__ import annotations

import os
from pathlib import Path

from omero_helpers import input_names, parse_script_file, parse_script_text, validation_errors

SCRIPT = '''\
import omero.scripts as scripts
from omero.rtypes import rlong, rstring


def run_script():
    client = scripts.client(
        "Test.py", "desc",
        scripts.String("Data_Type", optional=False, values=[rstring("Plate")], default="Plate"),
        scripts.List("IDs", optional=False).ofType(rlong(0)),
    )
    raise RuntimeError("parse mode must stop at scripts.client")


if __name__ == "__main__":
    run_script()
'''


def test_omero_modules_import(omero_sandbox):
    import Ice  # zeroc-ice, compiled for this interpreter
    import omero
    import omero.clients
    import omero.rtypes
    import omero.scripts

    assert hasattr(omero, "client")
    assert omero.rtypes.rstring("x").getValue() == "x"
    assert omero.rtypes.rlong(5).getValue() == 5
    assert Ice.stringVersion().startswith("3.6")
    assert callable(omero.scripts.parse_text) and callable(omero.scripts.validate_inputs)


def test_parse_text_reads_script_parameters(omero_sandbox, tmp_path):
    import omero.grid

    params = parse_script_text(SCRIPT)
    assert isinstance(params, omero.grid.JobParams)
    assert params.name == "Test.py"
    assert params.description == "desc"
    assert input_names(params) == {"Data_Type", "IDs"}
    data_type = params.inputs["Data_Type"]
    assert data_type.optional is False
    assert [v.getValue() for v in data_type.values.getValue()] == ["Plate"]
    assert data_type.prototype.getValue() == "Plate"
    assert params.inputs["IDs"].optional is False
    # parse_text leaves ICE_CONFIG set; the helper removes it again.
    assert "ICE_CONFIG" not in os.environ
    # Nothing went to the real home: omero-py's temporary files are under tmp_path.
    import omero.util.temp_files as temp_files

    assert Path(str(temp_files.manager.dir)).is_relative_to(tmp_path)


def test_validate_inputs_rejects_a_value_outside_the_list(omero_sandbox):
    from omero.rtypes import rlist, rlong, rstring

    params = parse_script_text(SCRIPT)
    ids = rlist([rlong(1), rlong(2)])
    assert validation_errors(params, {"Data_Type": rstring("Plate"), "IDs": ids}) == ""
    errors = validation_errors(params, {"Data_Type": rstring("Dataset"), "IDs": ids})
    assert "Data_Type" in errors and "Dataset" in errors
    missing = validation_errors(params, {"Data_Type": rstring("Plate")})
    assert "IDs" in missing


def test_parse_script_file(omero_sandbox, tmp_path):
    path = tmp_path / "Test.py"
    path.write_text(SCRIPT.replace('"Test.py", "desc"', '"From_File.py", "from a file"'))
    params = parse_script_file(path)
    assert params.name == "From_File.py"
    assert params.description == "from a file"
    assert input_names(params) == {"Data_Type", "IDs"}
