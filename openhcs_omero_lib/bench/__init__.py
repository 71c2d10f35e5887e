"""Benchmarks against the peers and the limit: openhcs-omero, a naive OMERO script,
OpenHCS, and the compute-bound limit, on the same generated plates and pipeline.

``main(argv)`` runs it from a command line; ``add_arguments(parser)`` and
``run(args)`` let another command line offer it. Importing
this package is cheap and imports neither omero nor OpenHCS: its modules also run
inside OpenHCS's own Python (:mod:`.openhcs_peer`).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from openhcs_omero_lib.bench.options import add_arguments as add

    add(parser)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "direct", False):  # RawPixelsStore against direct reads
        from openhcs_omero_lib.bench.direct import run as run_direct

        return run_direct(args)
    from openhcs_omero_lib.bench.command import run as run_parsed

    return run_parsed(args)


def main(argv: list[str] | None = None) -> int:
    from openhcs_omero_lib.bench import command

    parser = argparse.ArgumentParser(prog="python -m bench", description=command.__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


__all__ = ["add_arguments", "main", "run"]
