"""The benchmark, run from a clone as ``python -m bench``; the code lives in
:mod:`openhcs_omero_lib.bench` so that ``openhcs-omero bench`` finds it when installed."""

from openhcs_omero_lib.bench import add_arguments, main, run

__all__ = ["add_arguments", "main", "run"]
