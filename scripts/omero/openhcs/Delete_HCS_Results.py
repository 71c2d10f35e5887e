#!/usr/bin/env python
"""
Delete_HCS_Results.py: remove openhcs-omero results from plates.

Deletes every annotation openhcs-omero attached (files, key-value pairs, its
OMERO.table) to the selected plates, their wells and their images.
"""

import omero.scripts as scripts
from omero.gateway import BlitzGateway
from omero.rtypes import rlong, rstring

VERSION = "0.1.0"


def run_script():
    client = scripts.client(
        "Delete_HCS_Results.py",
        "Remove the results openhcs-omero attached to plates, their wells and images.",
        scripts.String(
            "Data_Type", optional=False, grouping="1", description="Plates, or a screen's plates.",
            values=[rstring("Plate"), rstring("Screen")], default="Plate"),
        scripts.List("IDs", optional=False, grouping="2", description="Plate or Screen IDs.").ofType(rlong(0)),
        version=VERSION,
        authors=["openhcs-omero developers"],
        institutions=["openhcs-omero"],
    )
    try:
        from openhcs_omero_lib.omero.script_support import delete_results_script

        conn = BlitzGateway(client_obj=client)
        outcome = delete_results_script(conn, client.getInputs(unwrap=True))
        client.setOutput("Message", rstring(outcome.message))
    finally:
        client.closeSession()


if __name__ == "__main__":
    run_script()
