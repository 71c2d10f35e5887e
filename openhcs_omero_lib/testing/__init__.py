"""A faithful in-memory OMERO server for tests: see :class:`OmeroStandIn`."""

from openhcs_omero_lib.testing.server import OmeroStandIn

__all__ = ["OmeroStandIn"]
