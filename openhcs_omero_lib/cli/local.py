"""Commands on local plates: ``run`` (a folder or the demo plate), ``make-plate``, ``pipelines``,
``show-pipeline``, ``validate``, ``describe``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from openhcs_omero_lib.cli.common import (
    RunFailed,
    UserError,
    check_local_plate,
    check_output,
    load_pipeline,
    open_backend,
    open_local_plate,
    picture_measurement,
    print_wells,
    progress_bar,
    tuned,
    tuning,
)

DEMO_CONFIG = dict(wells=24, sites=2, channels=2, size=256, seed=2026, touching=True, name="DEMO")
DEMO_VERSION = 1


def demo_plate() -> Path:
    """The demo plate, generated on first use into the cache (atomically)."""
    from openhcs_omero_lib.plates.synthetic import SyntheticPlateConfig, cache_dir, make_plate, write_once

    target = cache_dir() / f"demo-plate-v{DEMO_VERSION}"

    def write(folder: Path) -> None:
        print(f"generating the demo plate in {target} (once)", file=sys.stderr)
        make_plate(folder, SyntheticPlateConfig(**DEMO_CONFIG))

    return write_once(target, "ground_truth.csv", write)


def compare_ground_truth(folder: Path, results) -> None:
    from openhcs_omero_lib.plates.synthetic import GROUND_TRUTH, read_ground_truth

    if "nuclei_count" not in results.images or not (folder / GROUND_TRUTH).exists():
        return
    truth = read_ground_truth(folder)
    within = total = 0
    for row in results.images.itertuples():
        expected = truth.get((row.well, row.site, row.timepoint))
        if expected is None or row.error:
            continue
        total += 1
        within += abs(row.nuclei_count - expected) <= 0.05 * expected
    print(f"nuclei_count vs ground_truth.csv: {within}/{total} sites within 5%")


def cmd_run(args: argparse.Namespace) -> int:
    from openhcs_omero_lib.engine import bind, run_pipeline
    from openhcs_omero_lib.results.sinks import LocalFolderSink

    if args.omero_plate:
        if args.demo or args.plate:
            raise UserError("give a plate folder, --demo or --omero-plate (one of them)")
        from openhcs_omero_lib.cli.omero_plates import run_omero

        return run_omero(args)
    if args.run:
        raise UserError("--run chooses acquisition runs of an OMERO plate (--omero-plate); a folder has none")
    if args.demo == bool(args.plate):
        raise UserError("give a plate folder or --demo (not both)")
    folder = demo_plate() if args.demo else Path(args.plate)
    spec = load_pipeline(args.pipeline)
    values = tuning(spec, args.set)
    out = Path(args.out) if args.out else None
    if out is not None:
        check_output(out)
    # The plate's files are checked while the first fields compute (run_pipeline's
    # meanwhile): nothing is said or written before the check has passed.
    source = open_local_plate(str(folder))
    try:
        spec = tuned(spec, values, source.layout)
        bound = bind(spec, source.layout)  # a channel the plate lacks fails here, before any output
    except (ValueError, UserError) as exc:
        source.close()
        raise UserError(str(exc)) from None
    try:
        # Without pictures to draw, matplotlib (half a second) is not imported at all.
        wanted = args.heatmap or not args.no_heatmap or args.qc
        measurement = picture_measurement(args, bound) if wanted else ""
        backend = open_backend(args)
    except UserError:
        source.close()
        raise
    if out is None:
        out = Path("results") / f"{source.layout.name}_{spec.name}"
        try:
            check_output(out)
        except UserError:
            source.close()
            raise
    read = bound.channels_read()

    def check_then_describe() -> None:  # a plate refused is said in one line
        check_local_plate(source, not args.allow_bad_files, read)
        print(source.layout.describe(), file=sys.stderr)
        print(f"pipeline {spec.name}, {backend.describe()}, {source.layout.n_units} units", file=sys.stderr)

    try:
        results = run_pipeline(source, spec, backend=backend, progress=progress_bar(args.no_progress),
                               source_label=str(folder), outlines=args.qc, meanwhile=check_then_describe)
        pictures = local_pictures(args, results, source, bound, measurement)
    finally:
        source.close()
        backend.close()
    try:
        written = LocalFolderSink(out, pictures).write(results)
    except OSError as exc:
        raise RunFailed(f"cannot write results to {out}: {exc.strerror or exc}; nothing written") from None
    print_wells(results)
    s = results.summary
    print(f"{s['timing']['units']} units in {s['timing']['seconds']:.1f} s, "
          f"{s['units_failed']} failed; wrote {', '.join(written)}")
    compare_ground_truth(folder, results)
    return 1 if s["units_failed"] == s["timing"]["units"] else 0


def local_pictures(args: argparse.Namespace, results, source, bound, measurement: str) -> dict[str, bytes]:
    """``heatmap.png`` (unless --no-heatmap) and, with --qc, ``qc_montage.png``."""
    pictures: dict[str, bytes] = {}
    if args.no_heatmap and not args.qc:
        return pictures
    from openhcs_omero_lib.pictures.heatmap import drawable, plate_heatmap
    from openhcs_omero_lib.pictures.montage import qc_montage

    layout = source.layout
    if not args.no_heatmap and not drawable(layout.rows, layout.columns):
        print(f"no heatmap.png: a plate of {layout.rows}x{layout.columns} wells is larger than 1536-well plates",
              file=sys.stderr)
    elif not args.no_heatmap:
        pictures["heatmap.png"] = plate_heatmap(results.wells, layout.rows, layout.columns, plate=layout.name,
                                                pipeline=bound.name, measurement=measurement).png
    if args.qc:
        pictures["qc_montage.png"] = qc_montage(results, source.read_stack, bound, measurement).png
    return pictures


def cmd_make_plate(args: argparse.Namespace) -> int:
    from openhcs_omero_lib.plates.synthetic import SyntheticPlateConfig, make_plate

    try:
        config = SyntheticPlateConfig(wells=args.wells, sites=args.sites, channels=args.channels,
                                      z_planes=args.z, timepoints=args.timepoints, size=args.size,
                                      seed=args.seed, touching=args.touching, name=args.name)
        folder = make_plate(args.folder, config)
    except (ValueError, FileExistsError) as exc:
        raise UserError(str(exc)) from None
    print(f"wrote {folder} ({config.wells} wells, {config.sites} sites, {config.channels} channels, "
          f"{config.z_planes} z, {config.timepoints} t)")
    return 0


def cmd_pipelines(args: argparse.Namespace) -> int:
    from openhcs_omero_lib.pipeline.loading import parse_spec, preset_names, preset_text
    from openhcs_omero_lib.pipeline.params import describe

    for name in preset_names():
        spec = parse_spec(preset_text(name), name)
        print(f"{name}\n    {spec.description}")
        tunable = ", ".join(f"{p.name}={'none' if p.default is None else p.default}"
                            for p in describe(spec).values())
        if tunable:
            print(f"    --set: {tunable}")
    return 0


def cmd_show_pipeline(args: argparse.Namespace) -> int:
    from openhcs_omero_lib.pipeline.loading import PipelineError, preset_text

    try:
        print(preset_text(args.name), end="")
    except PipelineError as exc:
        raise UserError(str(exc)) from None
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from openhcs_omero_lib.engine import bind

    spec = load_pipeline(args.file)
    values = tuning(spec, args.set)
    if args.plate:
        source = open_local_plate(args.plate, check=True)
        try:
            bind(tuned(spec, values, source.layout), source.layout)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        finally:
            source.close()
    elif values:  # a channel given by name waits for a plate
        from openhcs_omero_lib.pipeline.params import describe

        kinds = describe(spec)
        tuned(spec, {k: v for k, v in values.items() if not (kinds[k].kind == "channel" and isinstance(v, str))},
               None)
    print(f"{args.file}: pipeline '{spec.name}' is valid ({len(spec.steps)} steps)")
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from openhcs_omero_lib.plates.virtual_backend import VirtualBackend

    source = open_local_plate(args.plate)
    layout = source.layout
    print(layout.describe())
    backend = VirtualBackend(layout)
    print(f"{layout.n_planes} planes; virtual paths under {backend.root}, e.g.:")
    for i, path in enumerate(backend.list_files()):
        if i >= args.samples:
            break
        print(f"  {path}")
    return 0
