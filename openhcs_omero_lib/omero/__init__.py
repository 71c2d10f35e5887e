"""The OMERO adapter: the only part of openhcs_omero_lib that imports ``omero``.

- :mod:`.connection`: logging in, joining a session (workers), disconnecting.
- :mod:`.plate`: plate layouts in at most three queries, cached until the plate changes.
- :mod:`.metadata`: :class:`~.metadata.OMEROMetadataHandler`, the extension point.
- :mod:`.pixels`: :class:`~.pixels.OmeroPixelSource`, one RawPixelsStore per process.
- :mod:`.annotations`, :mod:`.sink`: results as files, key-value pairs and a table.
- :mod:`.run`, :mod:`.script_support`: what the CLI and the OMERO scripts call.
"""

# Each module imports the parts of omero-py it uses (omero.gateway, which loads every
# omero.model class, costs a third of a second): a worker that reads the managed
# repository's files needs none of it.
