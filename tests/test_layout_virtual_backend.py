"""Plate layout helpers and the virtual backend's ImageXpress-style plane names."""

from __future__ import annotations

import dataclasses
import re
import string

import pytest

from openhcs_omero_lib.plates.layout import parse_well, row_letters, row_number, well_name
from openhcs_omero_lib.plates.synthetic import SyntheticPlateConfig, layout_for
from openhcs_omero_lib.plates.virtual_backend import PlaneCoord, VirtualBackend, parse_plane_filename, plane_filename

CONFIG_384 = SyntheticPlateConfig(wells=384, sites=2, channels=2, z_planes=2, timepoints=2)
NAME_RE = re.compile(r"^[A-Z]{1,2}\d{2}_s\d{3}_w\d_z\d{3}_t\d{3}\.tif$")


@pytest.fixture(scope="module")
def layout_384():
    return layout_for(CONFIG_384)


def test_384_well_layout_has_16_rows_of_24(layout_384):
    assert (layout_384.rows, layout_384.columns) == (16, 24)
    expected = {f"{r}{c:02d}" for r in string.ascii_uppercase[:16] for c in range(1, 25)}
    assert set(layout_384.well_names) == expected
    assert layout_384.n_planes == 384 * 2 * 2 * 2 * 2


def test_virtual_local_paths_round_trip_every_plane(layout_384):
    backend = VirtualBackend(layout_384)
    root = f"/plates/{layout_384.name}/"
    coords = list(backend.coords())
    assert len(coords) == layout_384.n_planes == 384 * 2 * 2 * 2 * 2
    assert len(set(coords)) == len(coords)
    names = set()
    for c in coords:
        path = backend.path(c)
        assert path.startswith(root), path
        name = backend.filename(c)
        assert path == root + name
        assert NAME_RE.match(name), name
        assert backend.parse(path) == c
        assert backend.parse(name) == c
        names.add(name)
    assert len(names) == len(coords), "virtual file names are not unique"
    # Every well, site, channel, z and t of the layout appears.
    assert {c.well for c in coords} == set(layout_384.well_names)
    assert {(c.site, c.channel, c.z, c.t) for c in coords} == {
        (s, w, z, t) for s in (1, 2) for w in (1, 2) for z in (1, 2) for t in (1, 2)}


def test_virtual_names_follow_the_imagexpress_pattern(layout_384):
    backend = VirtualBackend(layout_384)
    assert backend.filename(PlaneCoord("A01", 1, 1, 1, 1)) == "A01_s001_w1_z001_t001.tif"
    assert backend.filename(PlaneCoord("P24", 2, 2, 2, 2)) == "P24_s002_w2_z002_t002.tif"
    assert next(iter(backend.list_files())) == f"/plates/{layout_384.name}/A01_s001_w1_z001_t001.tif"
    assert plane_filename(PlaneCoord("H07", 12, 3, 10, 100)) == "H07_s012_w3_z010_t100.tif"
    assert parse_plane_filename("H07_s012_w3_z010_t100.tif") == PlaneCoord("H07", 12, 3, 10, 100)


def test_virtual_omero_paths_use_plate_id(layout_384):
    layout = dataclasses.replace(layout_384, plate_id=7)
    backend = VirtualBackend(layout)
    assert backend.root == "/omero/plate_7"
    paths = list(backend.list_files())
    assert len(paths) == layout.n_planes
    assert all(p.startswith("/omero/plate_7/") for p in paths)
    for coord, path in zip(backend.coords(), paths):
        assert backend.parse(path) == coord
    # A path of the local root is not under the OMERO root, and vice versa.
    with pytest.raises(ValueError):
        backend.parse(f"/plates/{layout.name}/A01_s001_w1_z001_t001.tif")
    with pytest.raises(ValueError):
        VirtualBackend(layout_384).parse("/omero/plate_7/A01_s001_w1_z001_t001.tif")


@pytest.mark.parametrize("name", [
    "A01.tif",
    "notes.txt",
    "A01_s001_w1_z001_t001.png",
    "A01_s001_w1_z001_t001.TIF",
    "A01_s001_w1.tif",
    "SYNTH_A01_s1_w1.TIF",
    "A01_s001_w1_z001_t001.tif.bak",
    "",
])
def test_virtual_parse_rejects_foreign_names(layout_384, name):
    with pytest.raises(ValueError):
        VirtualBackend(layout_384).parse(name)


@pytest.mark.parametrize("name, what", [
    ("Q01_s001_w1_z001_t001.tif", "well Q01"),     # row 17 on a 16-row plate
    ("A25_s001_w1_z001_t001.tif", "well A25"),     # column 25 on a 24-column plate
    ("A01_s000_w1_z001_t001.tif", "site 0"),
    ("A01_s003_w1_z001_t001.tif", "site 3"),
    ("A01_s001_w0_z001_t001.tif", "channel 0"),
    ("A01_s001_w3_z001_t001.tif", "channel 3"),
    ("A01_s001_w1_z003_t001.tif", "z 3"),
    ("A01_s001_w1_z000_t001.tif", "z 0"),
    ("A01_s001_w1_z001_t003.tif", "timepoint 3"),
])
def test_virtual_parse_rejects_coordinates_outside_the_plate(layout_384, name, what):
    backend = VirtualBackend(layout_384)
    with pytest.raises(ValueError, match=what):
        backend.parse(name)
    with pytest.raises(ValueError):
        backend.parse(f"{backend.root}/{name}")


def test_virtual_filename_rejects_coordinates_outside_the_plate(layout_384):
    backend = VirtualBackend(layout_384)
    for coord in (PlaneCoord("Q01", 1, 1), PlaneCoord("A01", 3, 1), PlaneCoord("A01", 1, 3),
                  PlaneCoord("A01", 1, 1, 3, 1), PlaneCoord("A01", 1, 1, 1, 3)):
        with pytest.raises(ValueError):
            backend.path(coord)


def test_virtual_parse_rejects_wells_missing_from_a_partial_plate():
    layout = layout_for(SyntheticPlateConfig(wells=10, sites=1, channels=1))  # 24-well format, 10 wells
    backend = VirtualBackend(layout)
    assert backend.parse("B04_s001_w1_z001_t001.tif") == PlaneCoord("B04", 1, 1)
    with pytest.raises(ValueError, match="well D06"):
        backend.parse("D06_s001_w1_z001_t001.tif")


@pytest.mark.parametrize("path", [
    "/plates/OTHER/A01_s001_w1_z001_t001.tif",
    "/plates/SYNTH/sub/A01_s001_w1_z001_t001.tif",
    "/omero/plate_7/A01_s001_w1_z001_t001.tif",
    "plates/SYNTH/A01_s001_w1_z001_t001.tif",
])
def test_virtual_parse_rejects_paths_under_another_root(layout_384, path):
    backend = VirtualBackend(layout_384)
    assert backend.root == "/plates/SYNTH"
    with pytest.raises(ValueError):
        backend.parse(path)


def test_virtual_backend_custom_root(layout_384):
    backend = VirtualBackend(layout_384, root="/mnt/x/")
    coord = PlaneCoord("C05", 2, 1, 2, 1)
    assert backend.path(coord) == "/mnt/x/C05_s002_w1_z002_t001.tif"
    assert backend.parse("/mnt/x/C05_s002_w1_z002_t001.tif") == coord


# ---- layout helpers --------------------------------------------------------------

def test_row_letters_single_and_double():
    assert [row_letters(r) for r in range(1, 27)] == list(string.ascii_uppercase)
    assert [row_letters(r) for r in range(27, 33)] == ["AA", "AB", "AC", "AD", "AE", "AF"]
    assert row_letters(27 + 26) == "BA"
    assert row_letters(702) == "ZZ"


def test_row_letters_round_trip():
    for row in range(1, 703):
        assert row_number(row_letters(row)) == row
    assert row_number("af") == 32


@pytest.mark.parametrize("row", [0, -1, 703])
def test_row_letters_rejects_out_of_range(row):
    with pytest.raises(ValueError):
        row_letters(row)


def test_well_name_round_trip_1536_well_plate():
    for row in range(1, 33):
        for col in range(1, 49):
            name = well_name(row, col)
            assert re.fullmatch(r"[A-Z]{1,2}\d{2}", name)
            assert parse_well(name) == (row, col)
    assert well_name(1, 1) == "A01"
    assert well_name(16, 24) == "P24"
    assert well_name(27, 1) == "AA01"
    assert well_name(32, 48) == "AF48"
    assert parse_well("AF48") == (32, 48)
    assert parse_well("b3") == (2, 3)


@pytest.mark.parametrize("name", ["", "A", "01", "01A", "ABC01", "A01x", "A-1", "A1234"])
def test_parse_well_rejects_non_wells(name):
    with pytest.raises(ValueError):
        parse_well(name)


def test_1536_well_layout_rows_aa_to_af_round_trip():
    layout = layout_for(SyntheticPlateConfig(wells=1536, sites=1, channels=1))
    assert (layout.rows, layout.columns) == (32, 48)
    rows = sorted({parse_well(w)[0] for w in layout.well_names})
    assert rows == list(range(1, 33))
    assert {w[:-2] for w in layout.well_names if parse_well(w)[0] > 26} == {"AA", "AB", "AC", "AD", "AE", "AF"}
    backend = VirtualBackend(layout)
    assert backend.parse("/plates/SYNTH/AF48_s001_w1_z001_t001.tif") == PlaneCoord("AF48", 1, 1)
    assert backend.path(PlaneCoord("AA01", 1, 1)) == "/plates/SYNTH/AA01_s001_w1_z001_t001.tif"
    with pytest.raises(ValueError):
        backend.parse("AG01_s001_w1_z001_t001.tif")
