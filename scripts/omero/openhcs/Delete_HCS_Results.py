#!/usr/bin/env python
"""
Delete_HCS_Results.py: remove openhcs-omero results from plates.

Deletes every annotation openhcs-omero attached for the user running it (files,
key-value pairs, its OMERO.table) to the selected plates, their wells and their
images; other users' results stay, and the message says whose.
"""

import omero.scripts as scripts


def run_script():
    from openhcs_omero_lib.omero.script_params import SCRIPT_INFO, selection_params, serve

    client = scripts.client(
        "Delete_HCS_Results.py",
        "Remove the results openhcs-omero attached for you to plates, their wells and images.",
        *selection_params("Clean up"),
        **SCRIPT_INFO,
    )
    serve(client, "delete_results_script")


if __name__ == "__main__":
    run_script()
