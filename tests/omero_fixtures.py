"""Helpers and fixtures for the OMERO-side tests (the adapter, the scripts, the stand-in).

Nothing here imports ``omero`` at module level: ``conftest.py`` re-exports the
fixtures, and importing this module must stay cheap for the engine-only tests.

- :func:`standin`: an :class:`~openhcs_omero_lib.testing.OmeroStandIn` that is always
  closed, with the adapter's process-wide plate cache cleared around it (stand-ins
  number their objects from 1, so two stand-ins can hold different plates under the
  same ID and, if the OS reuses a port, the same cache key).
- :func:`gateway`: a logged-in BlitzGateway that is always closed.
- :func:`snapshot` / :func:`created_since`: every object a result writer may create
  (files, annotations, links, tables), to prove a failed request left nothing.
- :func:`plate_members`, :func:`annotation_state`, :func:`image_site`: what is on a
  plate, its wells and its images, read from the stand-in's store (not via the adapter).
- :func:`write_fake_imagexpress`: a large ImageXpress folder in a fraction of a second
  (one real TIFF per channel, hard links for the other fields).
- :func:`use_long_plate`, :func:`results_on_plate`, :func:`wait_for_progress`,
  :func:`script_descendants`: following a script job on a stand-in (launch, cancel).
"""

from __future__ import annotations

import collections
import csv
import io
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

NS = "openhcs.omero/results/nuclei_count"
NS_PREFIX = "openhcs.omero/results/"
BULK_NS = "openmicroscopy.org/omero/bulk_annotations"

# What a result writer may leave behind in the store.
RESULT_KINDS = ("OriginalFile", "FileAnnotation", "MapAnnotation", "CommentAnnotation", "TagAnnotation",
                "PlateAnnotationLink", "WellAnnotationLink", "ImageAnnotationLink", "ScreenAnnotationLink")

SCRIPTS_DIR = Path(__file__).resolve().parents[1] / "scripts" / "omero" / "openhcs"
RUN_SCRIPT = SCRIPTS_DIR / "Run_HCS_Pipeline.py"
DESCRIBE_SCRIPT = SCRIPTS_DIR / "Describe_Plate.py"
DELETE_SCRIPT = SCRIPTS_DIR / "Delete_HCS_Results.py"


# ---- servers and connections ------------------------------------------------------------------

@contextmanager
def standin(**kwargs) -> Iterator[Any]:
    from openhcs_omero_lib.omero.plate import CACHE
    from openhcs_omero_lib.testing import OmeroStandIn

    CACHE.clear()
    server = OmeroStandIn(**kwargs)
    try:
        yield server
    finally:
        server.close()
        CACHE.clear()


@contextmanager
def gateway(server, user: str | None = None, password: str | None = None) -> Iterator[Any]:
    conn = server.gateway(user, password)
    try:
        yield conn
    finally:
        conn.close()


def iquery_calls(server) -> int:
    """Round trips to IQuery, whatever the method."""
    return sum(n for key, n in server.calls.items() if key.startswith("IQuery."))


def calls_since(server, before: collections.Counter) -> collections.Counter:
    delta = collections.Counter(server.calls)
    delta.subtract(before)
    return delta


# ---- what the store holds ---------------------------------------------------------------------

def snapshot(store) -> dict[str, frozenset]:
    """IDs of every object a result writer may create, plus file contents and tables."""
    snap = {kind: frozenset(store.objects.get(kind, {})) for kind in RESULT_KINDS}
    snap["files"] = frozenset(store.files)
    snap["tables"] = frozenset(store.tables)
    return snap


def created_since(before: dict[str, frozenset], after: dict[str, frozenset]) -> dict[str, list[int]]:
    """What ``after`` has that ``before`` had not (empty when nothing was left behind)."""
    return {kind: sorted(after[kind] - before[kind]) for kind in after if after[kind] - before[kind]}


def plate_members(store, plate_id: int) -> dict[str, list[int]]:
    """IDs of the plate, its wells and the images of its well samples, from the store."""
    wells = [w.getId().getValue() for w in store.children("Well", "plate", plate_id)]
    images = [ws.getImage().getId().getValue() for wid in wells
              for ws in store.children("WellSample", "well", wid)]
    return {"Plate": [plate_id], "Well": wells, "Image": images}


def ns_of(ann) -> str:
    return ann.getNs().getValue() if ann.getNs() is not None else ""


def annotation_state(store, plate_id: int) -> dict[tuple[str, int], list[int]]:
    """``(kind, id) -> sorted annotation IDs`` (one entry per link) for the plate, its
    wells and its images, every namespace."""
    state = {}
    for kind, ids in plate_members(store, plate_id).items():
        for oid in ids:
            state[(kind, oid)] = sorted(a.getId().getValue() for a in store.annotations_on(kind, oid))
    return state


def file_of(store, ann):
    return store.get("OriginalFile", ann.getFile().getId().getValue())


def file_name(store, ann) -> str:
    return file_of(store, ann).getName().getValue()


def mimetype(store, ann) -> str:
    return file_of(store, ann).getMimetype().getValue()


def csv_rows(store, ann) -> list[dict[str, str]]:
    """A FileAnnotation's CSV file, read with the csv module."""
    text = store.file_text(ann.getFile().getId().getValue())
    return list(csv.DictReader(io.StringIO(text)))


def well_names(store, plate_id: int) -> dict[int, str]:
    """Well ID -> ``A01``-style name, from the stored (0-based) row and column."""
    from openhcs_omero_lib.plates.layout import well_name

    return {w.getId().getValue(): well_name(w.getRow().getValue() + 1, w.getColumn().getValue() + 1)
            for w in store.children("Well", "plate", plate_id)}


def image_site(store, image_id: int) -> tuple[str, int]:
    """``(well, field)`` of an image the stand-in imported (named '<plate> <well> field <n>')."""
    name = store.get("Image", image_id).getName().getValue()
    *_, well, word, site = name.split()
    assert word == "field", name
    return well, int(site)


def link_annotation(conn, kind: str, parent_id: int, ann_class: str, ann_id: int) -> None:
    """Link an existing annotation to an object the way a client does (BlitzGateway)."""
    import omero.model

    link = getattr(omero.model, f"{kind}AnnotationLinkI")()
    link.setParent(getattr(omero.model, f"{kind}I")(parent_id, False))
    link.setChild(getattr(omero.model, f"{ann_class}I")(ann_id, False))
    conn.getUpdateService().saveObject(link)


# ---- plates -----------------------------------------------------------------------------------

def read_truth(folder: Path) -> dict[tuple[str, int, int], int]:
    """``ground_truth.csv`` read with the csv module (not the library's reader)."""
    with open(Path(folder) / "ground_truth.csv", newline="") as fh:
        return {(r["well"], int(r["site"]), int(r["timepoint"])): int(r["nuclei_count"])
                for r in csv.DictReader(fh)}


def within(measured: float, truth: float, tolerance: float = 0.05) -> bool:
    return abs(measured - truth) <= tolerance * truth


def write_fake_imagexpress(folder: Path, *, wells: int, sites: int, channels: int, size: int = 64,
                           name: str = "FAKE", seed: int = 0):
    """An ImageXpress folder (HTD, MetaSeries TIFFs) of any size, fast: one real plane
    per channel, the other fields hard links to it. Returns the generator's layout."""
    import numpy as np

    from openhcs_omero_lib.plates import imagexpress, synthetic

    cfg = synthetic.SyntheticPlateConfig(wells=wells, sites=sites, channels=channels, size=size, name=name)
    layout = synthetic.layout_for(cfg)
    folder.mkdir(parents=True)
    imagexpress.write_htd(folder / f"{name}.HTD", layout)
    rng = np.random.default_rng(seed)
    first = next(layout.units())
    originals = {c.index: imagexpress.write_plane(folder, layout, first.well, first.site, c.index, 1, 1,
                                                  rng.integers(0, 4096, (size, size), dtype=np.uint16))
                 for c in layout.channels}
    for unit in layout.units():
        for c in layout.channels:
            path = imagexpress.plane_dir(folder, layout, 1, unit.timepoint) / \
                imagexpress.image_filename(layout, unit.well, unit.site, c.index)
            if not path.exists():
                os.link(originals[c.index], path)
    return layout


@pytest.fixture(scope="session")
def fake_384_plate(tmp_path_factory):
    """384 wells x 9 fields x 4 channels of 64x64 px (a layout-sized plate, not for pixels)."""
    folder = tmp_path_factory.mktemp("fake384") / "plate"
    layout = write_fake_imagexpress(folder, wells=384, sites=9, channels=4, size=64, name="P384")
    return folder, layout


@pytest.fixture(scope="session")
def tiny_plate(tmp_path_factory):
    """2 wells x 2 sites, 2 channels, 96 px: for tests of attaching, not of measuring."""
    from openhcs_omero_lib.plates import synthetic

    folder = tmp_path_factory.mktemp("tiny") / "plate"
    synthetic.make_plate(folder, synthetic.SyntheticPlateConfig(wells=2, sites=2, channels=2, size=96, seed=3,
                                                                name="TINY"))
    return folder


@pytest.fixture(scope="module")
def small_and_multi_server(small_plate, multi_plate):
    """A stand-in holding the small plate (``small_id``) and the z/t plate (``multi_id``)."""
    with standin() as server:
        server.small_id = server.import_plate(small_plate.folder)
        server.multi_id = server.import_plate(multi_plate.folder)
        yield server


@pytest.fixture(scope="module")
def conn(server):
    """A BlitzGateway logged in to the requesting module's ``server`` fixture."""
    with gateway(server) as conn:
        yield conn


def as_from_a_shell() -> None:
    """In the child, before it runs: Ctrl-C's signal at its default and not blocked, as a
    shell starts a command. A child inherits an ignored or blocked SIGINT from this test
    process, whose state other tests' libraries may have changed, and would then never
    see the Ctrl-C the test sends."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


# ---- script jobs ------------------------------------------------------------------------------

def use_long_plate(server, folder) -> None:
    """Run on ``folder`` from now on, with every server call slowed enough for a run to be
    caught half-way."""
    server.plate_id = server.import_plate(folder)
    server.latency = 0.03


def results_on_plate(server) -> list:
    """The annotations of this package's results on ``server.plate_id``."""
    from openhcs_omero_lib.omero.sink import NS_PREFIX as ours

    return [a for a in server.store.annotations_on("Plate", server.plate_id)
            if a.getNs() is not None and a.getNs().getValue().startswith(ours)]


def wait_for_progress(conn, job_id: int, timeout: float = 60):
    """The job's state once it has reported a computed field; fails if it ends first."""
    from openhcs_omero_lib.omero.jobs import JobWatch

    with JobWatch(conn, job_id) as watch:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = watch.state()
            if state.progress is not None and state.progress.fields_done > 0:
                return state
            assert state.outcome is None, f"the job ended before showing progress: {state}"
            time.sleep(0.05)
    raise AssertionError("no progress within the timeout")


def script_descendants(server, job_id: int) -> list:
    """The script's descendants. The script itself is waited for through its job only:
    a wait on its PID here would take the exit status the Processor reads."""
    import psutil

    return psutil.Process(server.jobs[job_id].pid).children(recursive=True)
