"""A faithful in-memory OMERO server for tests: see :class:`OmeroStandIn`."""

import omero.gateway  # noqa: F401  (the stand-in makes omero.model objects throughout)

from openhcs_omero_lib.testing.server import OmeroStandIn

__all__ = ["OmeroStandIn"]
