"""openhcs-omero: HCS image pipelines run next to the data, in OMERO's script service.

The core (plate layout, virtual backend, pipeline specs, executor, result sinks) does
not import ``omero``; only :mod:`openhcs_omero_lib.omero` does.
"""

__version__ = "0.1.0"
