#!/usr/bin/env python
"""
Describe_Plate.py: a plate's layout as openhcs-omero sees it.

Wells, fields, channels, z planes, timepoints and sample virtual file names
(ImageXpress style), to check a plate before running a pipeline on it.
"""

import omero.scripts as scripts


def run_script():
    from openhcs_omero_lib.omero.script_params import SCRIPT_INFO, selection_params, serve

    client = scripts.client(
        "Describe_Plate.py",
        "Show the layout of plates (wells, fields, channels, z, t) and their virtual file names.",
        *selection_params("Describe"),
        **SCRIPT_INFO,
    )
    serve(client, "describe_plates_script")


if __name__ == "__main__":
    run_script()
