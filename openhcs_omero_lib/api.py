"""The stable Python API of openhcs-omero, for notebooks and scripts.

Everything public is importable from here; the rest of the package may change::

    from openhcs_omero_lib.api import (OMEROInstanceManager, OMEROMetadataHandler,
                                       OMEROFileBackend, list_plates, run_pipeline, read_results)

    with OMEROInstanceManager("omero.example.org", 4064, username="me") as server:
        conn = server.get_connection()                      # a BlitzGateway
        meta = OMEROMetadataHandler(conn)
        meta.get_channel_values(51)                         # ['DAPI', 'GFP']
        result = run_pipeline(51, "nuclei_count", conn=conn, nuclear_channel="DAPI")
        result.wells                                        # a pandas DataFrame
        back = read_results(conn, 51, "nuclei_count")       # the same, read from OMERO
        OMEROFileBackend(conn).save(back.wells, "counts.csv", "Plate:51")

- :func:`run_pipeline` (a local folder, or an OMERO plate with ``conn=``),
  :class:`RunResult`, :func:`load_pipeline`, :func:`pipeline_parameters`,
  :func:`presets`, :class:`PipelineSpec`, :class:`PipelineError`: no omero-py needed.
- :class:`OMEROMetadataHandler`, :class:`OMEROFileBackend` (with :class:`StoredFile`
  and :class:`SavedFile`), :func:`read_results`, :func:`list_plates`,
  :class:`OMEROInstanceManager`, :class:`OmeroInputError`, :class:`TargetError`:
  the OMERO side, imported on first use (this module itself does not import omero).

See the README's "From Python" section and ``examples/omero_tour.py``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from openhcs_omero_lib.pipeline.loading import PipelineError, preset_names
from openhcs_omero_lib.pipeline.params import ParameterInfo, describe
from openhcs_omero_lib.pipeline.spec import PipelineSpec
from openhcs_omero_lib.running import RunResult, load_pipeline, run_pipeline

if TYPE_CHECKING:
    from openhcs_omero_lib.omero.files import OMEROFileBackend, SavedFile, StoredFile
    from openhcs_omero_lib.omero.instance import OMEROInstanceManager
    from openhcs_omero_lib.omero.listing import PlateSummary, list_plates
    from openhcs_omero_lib.omero.metadata import OMEROMetadataHandler
    from openhcs_omero_lib.omero.plate import OmeroInputError
    from openhcs_omero_lib.omero.python_api import read_results
    from openhcs_omero_lib.omero.targets import TargetError

_LAZY = {
    "OMEROMetadataHandler": ".omero.metadata",
    "OMEROFileBackend": ".omero.files",
    "StoredFile": ".omero.files",
    "SavedFile": ".omero.files",
    "OMEROInstanceManager": ".omero.instance",
    "list_plates": ".omero.listing",
    "PlateSummary": ".omero.listing",
    "read_results": ".omero.python_api",
    "OmeroInputError": ".omero.plate",
    "TargetError": ".omero.targets",
}


def __getattr__(name: str) -> Any:
    """The OMERO side, imported when first asked for (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __package__), name)
    globals()[name] = value
    return value


def presets() -> list[str]:
    """The built-in pipelines' names."""
    return preset_names()


def pipeline_parameters(pipeline: Any) -> dict[str, ParameterInfo]:
    """What a pipeline (preset name, file, dict or PipelineSpec) lets you tune, by
    name: kind, current value, bounds, choices and description."""
    return describe(load_pipeline(pipeline))


__all__ = [
    "OMEROFileBackend", "OMEROInstanceManager", "OMEROMetadataHandler", "OmeroInputError", "ParameterInfo",
    "PipelineError", "PipelineSpec", "PlateSummary", "RunResult", "SavedFile", "StoredFile", "TargetError",
    "list_plates", "load_pipeline", "pipeline_parameters", "presets", "read_results", "run_pipeline",
]
