"""The benchmark's options: kept apart from the driver so that building the
``openhcs-omero`` command line (which offers ``bench``) imports nothing heavier than
argparse."""

from __future__ import annotations

import argparse
from typing import Any

DEFAULT_SIZES = "24,96,384"
DEFAULT_LATENCIES = "0,1,5"
DEFAULT_PLATE = {"sites": 2, "channels": 2, "plane": 160}
DEFAULT_OPENHCS_MAX_WELLS = 96
DEFAULT_OUT = "results/bench-results.json"
DIRECT_OUT = "results/bench-direct.json"
LARGE_PLATE = 96
"""Plates with more wells than this run ``--large-repeats`` times (their runs are long,
so less noisy, and repeating them would triple the benchmark's time)."""
QUICK = {"sizes": "2,4", "sites": 2, "channels": 2, "plane": 64, "repeats": 1}
PARTS = ("omero", "ops", "local")
DEFAULT_OP_SIZES = "1024,2048"
DEFAULT_OP_FIELDS, DEFAULT_OP_REPEATS = 3, 5
DEFAULT_LOCAL_PLATE = "96x9x256"
QUICK_OPS = {"op_sizes": [256], "op_fields": 1, "op_repeats": 1}
QUICK_LOCAL_PLATE = "4x2x64"


def _numbers(text: str, kind: type, minimum: float, what: str) -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what} separated by commas, got {text!r}") from None
    if not values or min(values) < minimum:
        raise argparse.ArgumentTypeError(f"expected numbers of at least {minimum}, got {text!r}")
    return values


def _int_list(text: str) -> list[int]:
    return _numbers(text, int, 1, "whole numbers")


def _float_list(text: str) -> list[float]:
    return _numbers(text, float, 0, "numbers")


def _positive(text: str) -> int:
    value = _int_list(text)
    if len(value) != 1:
        raise argparse.ArgumentTypeError(f"expected one whole number, got {text!r}")
    return value[0]


def _plane(text: str) -> int:
    value = _positive(text)
    if value < 64:
        raise argparse.ArgumentTypeError(f"planes are at least 64 pixels, got {value}")
    return value


def _local_plate(text: str) -> tuple[int, int, int]:
    try:
        wells, sites, plane = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WELLSxSITESxPIXELS such as 96x9x256, got {text!r}") from None
    if min(wells, sites) < 1 or plane < 64:
        raise argparse.ArgumentTypeError(f"expected at least 1 well, 1 site and 64 pixels, got {text!r}")
    return wells, sites, plane


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options, for ``python -m bench``."""
    parts = parser.add_argument_group("parts (all three when none is named)")
    parts.add_argument("--omero", action="store_true",
                       help="openhcs-omero, the naive script, OpenHCS and the compute-bound limit on OMERO plates")
    parts.add_argument("--ops", action="store_true",
                       help="the op-by-op table: each operation of the presets against a plain reference")
    parts.add_argument("--plain-loop", action="store_true",
                       help="openhcs-omero run on a local plate against a plain tifffile + scipy loop")
    parser.add_argument("--op-sizes", type=_int_list, default=None, metavar="PX,PX,...",
                        help=f"field sizes of the op table (default {DEFAULT_OP_SIZES})")
    parser.add_argument("--op-fields", type=_positive, default=None, metavar="N",
                        help=f"fields per size in the op table, 1-3 (default {DEFAULT_OP_FIELDS})")
    parser.add_argument("--op-repeats", type=_positive, default=None, metavar="N",
                        help=f"rounds per field in the op table (default {DEFAULT_OP_REPEATS})")
    parser.add_argument("--local-plate", type=_local_plate, default=None, metavar="WxSxPX",
                        help=f"the plain-loop comparison's plate (default {DEFAULT_LOCAL_PLATE})")
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny plates ({QUICK['sizes']} wells, {QUICK['plane']} px), one repeat: "
                             "checks that everything runs, says nothing about speed")
    parser.add_argument("--sizes", type=_int_list, default=None, metavar="N,N,...",
                        help=f"plate sizes in wells (default {DEFAULT_SIZES})")
    parser.add_argument("--sites", type=_positive, default=None,
                        help=f"sites per well (default {DEFAULT_PLATE['sites']})")
    parser.add_argument("--channels", type=int, choices=range(1, 5), default=None, metavar="1-4",
                        help=f"channels (default {DEFAULT_PLATE['channels']})")
    parser.add_argument("--plane", type=_plane, default=None,
                        help=f"plane size in pixels, at least 64 (default {DEFAULT_PLATE['plane']})")
    parser.add_argument("--latencies", type=_float_list, default=None, metavar="MS,MS,...",
                        help=f"simulated latency per server call, ms (default {DEFAULT_LATENCIES})")
    parser.add_argument("--workers", type=_positive, default=2, help="the larger worker count (default 2)")
    parser.add_argument("--repeats", type=_positive, default=None,
                        help="runs per configuration, the median is reported (default 3)")
    parser.add_argument("--large-repeats", type=_positive, default=None, metavar="N",
                        help=f"runs per configuration on plates of more than {LARGE_PLATE} wells (default 1)")
    parser.add_argument("--openhcs-repeats", type=_positive, default=None, metavar="N",
                        help="runs of OpenHCS per plate (default 1: it is several times slower, so its "
                             "run-to-run noise cannot change a comparison)")
    parser.add_argument("--pipeline", default="nuclei_count", help="preset (default nuclei_count)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"JSON report (default {DEFAULT_OUT})")
    parser.add_argument("--markdown", default=None, metavar="FILE", help="also write the table to FILE")
    parser.add_argument("--cache", default=None, metavar="DIR",
                        help="where plates are kept (default ~/.cache/openhcs-omero/bench-plates)")
    parser.add_argument("--skip-openhcs", action="store_true", help="do not run OpenHCS")
    parser.add_argument("--openhcs-max-wells", type=_positive, default=DEFAULT_OPENHCS_MAX_WELLS, metavar="N",
                        help="run OpenHCS only on plates of at most N wells (default "
                             f"{DEFAULT_OPENHCS_MAX_WELLS}: it takes minutes and gigabytes on 384)")
    parser.add_argument("--openhcs-python", default=None, metavar="PYTHON",
                        help="a Python that has openhcs (default: $OPENHCS_PYTHON, the cached OpenHCS "
                             "environment, or this Python)")
    parser.add_argument("--install-openhcs", action="store_true",
                        help="first install OpenHCS (CPU only, about 1.5 GB) into its own cached environment")
    parser.add_argument("--direct", action="store_true",
                        help="instead: RawPixelsStore against direct reads from the managed repository "
                             "(Pixel_Access server and auto), on the plates and on --realistic "
                             f"(JSON: {DIRECT_OUT} unless --out)")
    parser.add_argument("--realistic", type=_realistic, default=None, metavar="WELLS,SITES,CHANNELS,PLANE",
                        help="with --direct: the plate of realistic planes, or none (default 24,2,3,1024; "
                             "--quick: none)")


def _realistic(text: str):
    from openhcs_omero_lib.bench.plates import realistic_spec

    try:
        return realistic_spec(text) or "none"
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    """What to run, from the parsed options."""
    quick = QUICK if args.quick else {}
    return {
        "sizes": args.sizes or _int_list(quick.get("sizes", DEFAULT_SIZES)),
        "sites": args.sites or quick.get("sites", DEFAULT_PLATE["sites"]),
        "channels": args.channels or quick.get("channels", DEFAULT_PLATE["channels"]),
        "plane": args.plane or quick.get("plane", DEFAULT_PLATE["plane"]),
        "openhcs_max_wells": args.openhcs_max_wells,
        "latencies_ms": args.latencies if args.latencies is not None else _float_list(DEFAULT_LATENCIES),
        "workers": sorted({1, args.workers}),
        "repeats": args.repeats or quick.get("repeats", 3),
        "large_repeats": args.large_repeats or quick.get("repeats", 1),
        "openhcs_repeats": args.openhcs_repeats or 1,
        "pipeline": args.pipeline,
        "parts": [p for p, on in zip(PARTS, (args.omero, args.ops, args.plain_loop)) if on] or list(PARTS),
        "op_sizes": args.op_sizes or (QUICK_OPS["op_sizes"] if args.quick else _int_list(DEFAULT_OP_SIZES)),
        "op_fields": min(3, args.op_fields or (QUICK_OPS["op_fields"] if args.quick else DEFAULT_OP_FIELDS)),
        "op_repeats": args.op_repeats or (QUICK_OPS["op_repeats"] if args.quick else DEFAULT_OP_REPEATS),
        "local_plate": args.local_plate or _local_plate(QUICK_LOCAL_PLATE if args.quick else DEFAULT_LOCAL_PLATE),
    }
