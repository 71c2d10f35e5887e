"""The ``openhcs-omero`` command: one module per command group (app holds the parser)."""
