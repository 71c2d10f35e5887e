#!/usr/bin/env python
"""
Run_HCS_Pipeline.py: run an openhcs-omero pipeline on plates, inside the server.

Measures every field of the selected plates (or of every plate of the selected
screens) with a pipeline preset or a pipeline spec uploaded as a file annotation,
optionally tuned (nuclear channel, nucleus sizes, ...: the optional parameters under
the pipeline choice), in parallel worker processes, and attaches the results: CSV and
JSON files, an OMERO.table shown in the plate view, key-value pairs on the wells, a
heat map of the plate and, if asked, the measured objects as ROIs.

Requires the openhcs-omero package in the server's Python environment.
"""

import omero.scripts as scripts
from omero.rtypes import rlong, rstring


def run_script():
    # Imported here: the server runs this file once to read its parameters, and that
    # must stay cheap.
    from openhcs_omero_lib.omero.script_params import (
        SCRIPT_INFO,
        preset_names,
        roi_cap_default,
        selection_params,
        serve,
        tuning_params,
    )

    presets = [rstring(n) for n in preset_names()]
    client = scripts.client(
        "Run_HCS_Pipeline.py",
        """Run an HCS image pipeline on plates where their pixels are, and attach
per-well and per-field measurements (CSV, JSON, OMERO.table, key-value pairs), a heat
map of the plate and, if asked, the measured objects as ROIs.""",
        *selection_params("Run on"),
        scripts.List(
            "Runs", optional=True, grouping="2.1",
            description="IDs of the acquisition runs (PlateAcquisitions) to measure; empty: every run, "
                        "each measured on its own.").ofType(rlong(0)),
        scripts.String(
            "Pipeline", optional=True, grouping="3",
            description="A built-in pipeline.", values=presets, default="nuclei_count"),
        scripts.Long(
            "Pipeline_File_Annotation", optional=True, grouping="3.1", min=1,
            description="ID of a file annotation holding a YAML/JSON pipeline spec; "
                        "used instead of the preset when given."),
        # The pipeline's tunable parameters (nuclear channel, sizes, ...), each optional:
        # left empty, the pipeline keeps its own value.
        *tuning_params("3"),
        scripts.Int(
            "Workers", optional=True, grouping="4", min=1, max=64, default=2,
            description="Parallel workers, capped at the server's cores: this script's own "
                        "process, and more processes when the plate is large enough to be worth "
                        "their start-up."),
        scripts.String(
            "Pixel_Access", optional=True, grouping="4.1", values=[rstring("auto"), rstring("server")],
            default="auto",
            description="auto: read the plate's files straight from the server's managed repository when "
                        "they pass the checks (the Message says which way was taken); server: always "
                        "through OMERO's RawPixelsStore. The results are the same."),
        # A Bool with children switches them off in OMERO.insight, which then sends their
        # defaults instead (omero-insight ScriptComponent.getValue, ParamData.setValueToPass):
        # the outputs are each chosen on their own, under the choice of where they go.
        scripts.String(
            "Attach_To", optional=True, grouping="5",
            description="Where to attach results; the outputs below are each chosen on their own.",
            values=[rstring("Plate"), rstring("Plate and wells"), rstring("Plate, wells and images")],
            default="Plate and wells"),
        scripts.Bool("CSV", optional=True, grouping="5.1", default=True,
                     description="CSV tables (per well, per field)."),
        scripts.Bool("JSON", optional=True, grouping="5.2", default=True,
                     description="Run summary: pipeline, timing, errors."),
        scripts.Bool("OMERO_Table", optional=True, grouping="5.3", default=True,
                     description="OMERO.table on the plate, shown in OMERO.web's plate view."),
        scripts.Bool("Key_Value_Pairs", optional=True, grouping="5.4", default=True,
                     description="Per-well measurements as key-value pairs on each well."),
        scripts.Bool("Replace_Previous_Results", optional=True, grouping="6", default=True,
                     description="Remove your earlier results of this pipeline once the new ones are saved "
                                 "(other users' results stay)."),
        # Bool parents whose children mean nothing without them: the default OMERO.insight
        # sends for a greyed-out child does no harm.
        scripts.Bool("Heat_Map", optional=True, grouping="7", default=True,
                     description="A PNG of the plate coloured by a well measurement, attached to the plate."),
        scripts.String("Heat_Map_Measurement", optional=True, grouping="7.1",
                       description="The well measurement it shows (a column of the wells CSV); "
                                   "empty: the pipeline's first count."),
        scripts.Bool("Save_ROIs", optional=True, grouping="8", default=False,
                     description="Outline the objects each field's count was made of, as ROIs on its image "
                                 "(shown in OMERO.iviewer); replaced with the other results."),
        scripts.Int("Max_ROIs_Per_Image", optional=True, grouping="8.1", default=roi_cap_default(), min=1, max=100000,
                    description="At most this many ROIs per image; the Message says where it was reached."),
        **SCRIPT_INFO,
    )
    serve(client, "run_pipeline_script", progress=True)


if __name__ == "__main__":
    run_script()
