"""The benchmark, run from a clone as ``python -m bench``; the code lives in
:mod:`openhcs_omero_lib.bench` so that an installed package has it too (``python -m openhcs_omero_lib.bench``)."""

from openhcs_omero_lib.bench import add_arguments, main, run

__all__ = ["add_arguments", "main", "run"]
