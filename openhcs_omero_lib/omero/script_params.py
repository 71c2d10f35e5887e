"""What every openhcs-omero script shares: the selection parameters, its credits,
and serving one call of :mod:`.script_support`. Imports only omero-py, so that the
server reading a script's parameters stays cheap."""

from __future__ import annotations

import importlib

import omero.scripts as scripts
from omero.gateway import BlitzGateway
from omero.rtypes import rlong, robject, rstring

from .. import __version__

SCRIPT_INFO = dict(version=__version__, authors=["openhcs-omero developers"], institutions=["openhcs-omero"])


def selection_params(what: str) -> list:
    """``Data_Type`` and ``IDs``, which OMERO.web and OMERO.insight fill from the selection."""
    return [
        scripts.String("Data_Type", optional=False, grouping="1", description=f"{what} plates, or a screen's plates.",
                       values=[rstring("Plate"), rstring("Screen")], default="Plate"),
        scripts.List("IDs", optional=False, grouping="2", description="Plate or Screen IDs.").ofType(rlong(0)),
    ]


def serve(client, function: str) -> None:
    """Call ``script_support.<function>(conn, inputs)``, publish its outcome as the
    ``Message`` (and ``File_Annotation``) outputs, and close the script's session."""
    try:
        support = importlib.import_module("openhcs_omero_lib.omero.script_support")
        conn = BlitzGateway(client_obj=client)
        outcome = getattr(support, function)(conn, client.getInputs(unwrap=True))
        client.setOutput("Message", rstring(outcome.message))
        if outcome.file_annotation is not None:
            client.setOutput("File_Annotation", robject(outcome.file_annotation))
    finally:
        client.closeSession()
