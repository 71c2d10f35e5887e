#!/usr/bin/env python
"""
Describe_Plate.py: a plate's layout as openhcs-omero sees it.

Wells, fields, channels, z planes, timepoints and sample virtual file names
(ImageXpress style), to check a plate before running a pipeline on it.
"""

import omero.scripts as scripts
from omero.gateway import BlitzGateway
from omero.rtypes import rlong, rstring

VERSION = "0.1.0"


def run_script():
    client = scripts.client(
        "Describe_Plate.py",
        "Show the layout of plates (wells, fields, channels, z, t) and their virtual file names.",
        scripts.String(
            "Data_Type", optional=False, grouping="1", description="Describe plates, or a screen's plates.",
            values=[rstring("Plate"), rstring("Screen")], default="Plate"),
        scripts.List("IDs", optional=False, grouping="2", description="Plate or Screen IDs.").ofType(rlong(0)),
        version=VERSION,
        authors=["openhcs-omero developers"],
        institutions=["openhcs-omero"],
    )
    try:
        from openhcs_omero_lib.omero.script_support import describe_plates_script

        conn = BlitzGateway(client_obj=client)
        outcome = describe_plates_script(conn, client.getInputs(unwrap=True))
        client.setOutput("Message", rstring(outcome.message))
    finally:
        client.closeSession()


if __name__ == "__main__":
    run_script()
