"""The documentation runs: ``examples/omero_tour.py`` against the stand-in, as a user
runs it (a new process, settings from the environment), and the README's "From
Python" code is that example's code."""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from omero_fixtures import file_of, standin

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "omero_tour.py"


@pytest.fixture(scope="module")
def tour(tiny_plate, tmp_path_factory):
    """The example run against a stand-in holding one plate; (server, plate ID, the run)."""
    home = tmp_path_factory.mktemp("tour-home")
    with standin() as server:
        pid = server.import_plate(tiny_plate)
        env = {k: v for k, v in os.environ.items() if not k.startswith("OMERO_")}
        env.update(HOME=str(home), OMERO_TMPDIR=str(home / "omero-tmp"), OMERO_HOST=server.host,
                   OMERO_PORT=str(server.port), OMERO_ROUTER=server.router, OMERO_USER=server.user.name,
                   OMERO_PASSWORD=server.password,
                   PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
        done = subprocess.run([sys.executable, str(EXAMPLE)], cwd=home, env=env, capture_output=True, text=True,
                              timeout=600)
        yield server, pid, done


def test_the_example_runs(tour):
    _, pid, done = tour
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"plate {pid}: TINY, 2 wells, 2 fields" in out
    assert "channels: ['DAPI', 'FITC']" in out and "wells: ['A01', 'A02']" in out
    assert "nuclei_count can tune: nuclear_channel, smoothing" in out
    assert re.search(r"saved nuclei_per_row.csv on Plate:\d+ as FileAnnotation:\d+", out)
    assert tour[0].password not in out + done.stderr  # never printed


def test_what_the_example_saved_is_on_the_plate(tour):
    """The derived table is read from the store (not through the API) and checked
    against the run's own per-well CSV, read the same way."""
    server, pid, done = tour
    assert done.returncode == 0, done.stderr
    store = server.store

    def rows(ns: str, name: str) -> list[dict[str, str]]:
        (ann,) = [a for a in store.annotations_on("Plate", pid, ns) if file_of(store, a).getName().getValue() == name]
        return list(csv.DictReader(io.StringIO(store.file_text(ann.getFile().getId().getValue()))))

    wells = rows("openhcs.omero/results/nuclei_count", "nuclei_count_wells.csv")
    expected: dict[str, int] = {}
    for row in wells:
        expected[row["row"]] = expected.get(row["row"], 0) + int(row["nuclei_count"])
    saved = rows("openhcs.omero/files", "nuclei_per_row.csv")
    assert {r["row"]: int(r["nuclei_count"]) for r in saved} == expected
    spec = next(a for a in store.annotations_on("Plate", pid, "openhcs.omero/results/nuclei_count")
                if file_of(store, a).getName().getValue() == "nuclei_count_results.json")
    assert '"min_size": 30' in store.file_text(spec.getFile().getId().getValue())


def test_the_readme_shows_the_examples_code():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## From Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "the README's From Python section has no python block"
    example = {line.strip() for line in EXAMPLE.read_text().splitlines()}
    missing = [line for line in blocks[0].splitlines()
               if line.strip() and not line.strip().startswith("#") and line.strip() not in example]
    assert missing == [], "README lines that the tested example does not run"
