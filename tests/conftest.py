"""Shared fixtures: small synthetic plates, generated once per test session.

Every plate lives under pytest's session temporary folder; nothing is written into
the user's home or the project. Plates are small (128-256 px, a few wells) so the
whole suite stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

# Re-exported so that any test can ask for the ``omero_sandbox`` fixture.
from omero_helpers import omero_sandbox  # noqa: F401
from openhcs_omero_lib.plates import synthetic
from openhcs_omero_lib.plates.synthetic import SyntheticPlateConfig

# The reliability suite's counts and its summary line (tests/reliability.py).
from reliability import (  # noqa: F401
    pytest_collection_modifyitems,
    pytest_runtest_logreport,
    pytest_terminal_summary,
    reliability_guard,
)


@dataclass(frozen=True)
class Plate:
    """A generated plate folder and the configuration it was generated from."""

    folder: Path
    config: SyntheticPlateConfig


def _make(tmp_path_factory: pytest.TempPathFactory, label: str, **config) -> Plate:
    cfg = SyntheticPlateConfig(**config)
    folder = tmp_path_factory.mktemp(label) / "plate"
    synthetic.make_plate(folder, cfg)
    return Plate(folder, cfg)


@pytest.fixture(scope="session")
def small_plate(tmp_path_factory) -> Plate:
    """4 wells x 2 sites, 2 channels, 128 px: for executor, results and CLI tests."""
    return _make(tmp_path_factory, "small", wells=4, sites=2, channels=2, size=128, seed=11, name="SMALL")


@pytest.fixture(scope="session")
def multi_plate(tmp_path_factory) -> Plate:
    """3 wells x 2 sites, 2 channels, 2 z, 2 timepoints, 128 px: for the reader."""
    return _make(tmp_path_factory, "multi", wells=3, sites=2, channels=2, z_planes=2, timepoints=2,
                 size=128, seed=5, name="MULTI")


@pytest.fixture(scope="session")
def normal_plate(tmp_path_factory) -> Plate:
    """12 wells x 2 sites, 2 channels, 256 px: accuracy and translocation."""
    return _make(tmp_path_factory, "normal", wells=12, sites=2, channels=2, size=256)


@pytest.fixture(scope="session")
def touching_plate(tmp_path_factory) -> Plate:
    """16 wells x 2 sites with many touching nuclei."""
    return _make(tmp_path_factory, "touching", wells=16, sites=2, channels=2, size=256, touching=True)


@pytest.fixture(scope="session")
def zt_plate(tmp_path_factory) -> Plate:
    """4 wells x 2 sites, 3 z planes, 3 timepoints."""
    return _make(tmp_path_factory, "zt", wells=4, sites=2, channels=1, z_planes=3, timepoints=3, size=256)


@pytest.fixture(scope="session")
def timelapse_runs(tmp_path_factory) -> list[tuple[str, Path]]:
    """Two acquisition runs of one plate, as ``[(run name, folder)]``: the same
    layout (3 wells x 2 sites, 1 channel, 3 z, 2 timepoints, 160 px), other nuclei."""
    return [(name, _make(tmp_path_factory, f"run{i}", wells=3, sites=2, channels=1, z_planes=3, timepoints=2,
                         size=160, seed=40 + i, name="TIMELAPSE").folder)
            for i, name in enumerate(("Run A", "Run B"))]


# OMERO-side fixtures (tests/omero_fixtures.py), re-exported for every test module.
from omero_fixtures import conn, fake_384_plate, small_and_multi_server, tiny_plate  # noqa: E402,F401


def pytest_configure(config):
    """omero-py makes a temporary-file folder on first import (``~/omero/tmp`` unless
    ``OMERO_TMPDIR`` is set): keep the test session's, and its worker processes', out
    of the user's home."""
    import os
    import tempfile

    if not (os.environ.get("OMERO_TMPDIR") or os.environ.get("OMERO_TEMPDIR")):
        config._omero_tmpdir = tempfile.mkdtemp(prefix="openhcs-omero-tests-")
        os.environ["OMERO_TMPDIR"] = config._omero_tmpdir


def pytest_unconfigure(config):
    import os
    import shutil

    folder = getattr(config, "_omero_tmpdir", None)
    if folder:
        if os.environ.get("OMERO_TMPDIR") == folder:
            del os.environ["OMERO_TMPDIR"]
        shutil.rmtree(folder, ignore_errors=True)
