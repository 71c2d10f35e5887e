"""A faithful in-memory OMERO server for tests: see :class:`OmeroStandIn`."""

from .server import OmeroStandIn

__all__ = ["OmeroStandIn"]
