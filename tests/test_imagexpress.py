"""Reading ImageXpress (MetaXpress) plate folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from openhcs_omero_lib.plates import imagexpress
from openhcs_omero_lib.plates.imagexpress import ImageXpressSource, NotAPlateError, is_plate_folder, read_layout
from openhcs_omero_lib.plates.layout import SiteUnit
from openhcs_omero_lib.plates.synthetic import layout_for, render_site

GUID_A = "F0C52ED7-1234-4A5B-9C8D-0123456789AB"
GUID_DIGIT = "0C52ED7A-9876-4A5B-8C8D-FEDCBA987654"  # starts with a digit, right after w<d>
GUID_B = "ABCDEF01-2345-6789-ABCD-EF0123456789"
GUID_C = "12345678-ABCD-EF01-2345-6789ABCDEF01"


def _plane(value: int, shape=(32, 40), dtype=np.uint16) -> np.ndarray:
    """A plane that identifies where it came from: a ramp offset by ``value``."""
    return (np.arange(shape[0] * shape[1]).reshape(shape) % 97 + value).astype(dtype)


def _write(path: Path, plane: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, plane)


# ---- (a) synthetic plates written by make_plate -----------------------------------

def test_synthetic_plate_layout_read_back(multi_plate):
    cfg = multi_plate.config
    layout, _ = read_layout(multi_plate.folder)
    assert layout.name == cfg.name
    assert layout.well_names == ["A01", "A02", "A03"]
    assert (layout.rows, layout.columns) == (2, 3)
    assert layout.sites == cfg.sites == 2
    assert [c.index for c in layout.channels] == [1, 2]
    assert [c.name for c in layout.channels] == ["DAPI", "FITC"]
    assert [c.emission_wavelength for c in layout.channels] == [461.0, 525.0]
    assert layout.z_planes == 2 and layout.timepoints == 2
    assert layout.plane_shape == (cfg.size, cfg.size)
    assert layout.dtype == "uint16"
    assert layout.pixel_size_um == pytest.approx(0.65)
    assert layout.plate_id is None
    # The reader's layout is the one the generator wrote from.
    assert layout == layout_for(cfg)


def test_synthetic_plate_planes_equal_render_site(multi_plate):
    cfg = multi_plate.config
    with ImageXpressSource(multi_plate.folder) as source:
        for unit in source.layout.units():
            planes, n = render_site(cfg, unit.well, unit.site, unit.timepoint)
            assert n > 0
            for (c, z), expected in planes.items():
                got = source.read_plane(unit.well, unit.site, c, z, unit.timepoint)
                assert got.dtype == np.uint16 and got.shape == expected.shape
                np.testing.assert_array_equal(got, expected, err_msg=f"{unit} w{c} z{z}")
        # read_stack gives the z planes of one channel in order.
        unit = SiteUnit("A02", 2, 2)
        planes, _ = render_site(cfg, "A02", 2, 2)
        np.testing.assert_array_equal(source.read_stack(unit, 2), np.stack([planes[(2, 1)], planes[(2, 2)]]))


def test_render_site_is_deterministic(multi_plate):
    cfg = multi_plate.config
    first, n1 = render_site(cfg, "A03", 1, 2)
    second, n2 = render_site(cfg, "A03", 1, 2)
    other, _ = render_site(cfg, "A03", 2, 2)
    assert n1 == n2
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    assert not np.array_equal(first[(1, 1)], other[(1, 1)])


def test_synthetic_plate_spec_reopens_the_same_source(multi_plate):
    from openhcs_omero_lib.plates.pixels import open_source

    source = ImageXpressSource(multi_plate.folder)
    reopened = open_source(source.spec())
    assert isinstance(reopened, ImageXpressSource)
    assert reopened.layout == source.layout
    np.testing.assert_array_equal(reopened.read_plane("A01", 1, 2, 2, 1), source.read_plane("A01", 1, 2, 2, 1))


# ---- (b) folders as instruments write them ----------------------------------------

def test_single_site_single_wavelength_names(tmp_path):
    folder = tmp_path / "PLATE"
    _write(folder / "PLATE_B03.TIF", _plane(100))
    _write(folder / "PLATE_B04.TIF", _plane(200))
    layout, _ = read_layout(folder)
    assert layout.well_names == ["B03", "B04"]
    assert layout.sites == 1 and len(layout.channels) == 1
    assert layout.z_planes == 1 and layout.timepoints == 1
    assert layout.plane_shape == (32, 40)
    assert layout.name == "PLATE"
    source = ImageXpressSource(folder)
    np.testing.assert_array_equal(source.read_plane("B03", 1, 1), _plane(100))
    np.testing.assert_array_equal(source.read_plane("B04", 1, 1), _plane(200))


def test_names_with_guid_after_wavelength(tmp_path):
    folder = tmp_path / "guids"
    files = {
        (1, 1): f"PLATE_B03_s1_w1{GUID_A}.TIF",
        (1, 2): f"PLATE_B03_s1_w2{GUID_B}.TIF",
        (2, 1): f"PLATE_B03_s2_w1{GUID_DIGIT}.TIF",  # w1 followed by a GUID starting with 0
        (2, 2): f"PLATE_B03_s2_w2{GUID_C}.TIF",      # w2 followed by a GUID starting with 1
    }
    for (site, wave), name in files.items():
        _write(folder / name, _plane(10 * site + wave))
    layout, _ = read_layout(folder)
    assert layout.well_names == ["B03"]
    assert layout.sites == 2
    assert len(layout.channels) == 2  # not w10, w12, ...
    source = ImageXpressSource(folder)
    for (site, wave) in files:
        np.testing.assert_array_equal(source.read_plane("B03", site, wave), _plane(10 * site + wave))


@pytest.mark.parametrize("name, expected", [
    (f"PLATE_B03_s2_w1{GUID_A}.TIF", ("B03", 2, 1)),
    (f"PLATE_B03_s2_w1{GUID_DIGIT}.TIF", ("B03", 2, 1)),
    (f"PLATE_B03_s2_w2{GUID_C}.tif", ("B03", 2, 2)),
    ("PLATE_B03.TIF", ("B03", None, None)),
    ("PLATE_B03_s4.TIF", ("B03", 4, None)),
    ("PLATE_B03_w3.TIF", ("B03", None, 3)),
    ("plate_b03_s1_w2.tif", ("B03", 1, 2)),
    ("My_Plate_AF48_s1_w1.TIF", ("AF48", 1, 1)),
    ("PLATE_B03_s1_w1_thumb.TIF", None),
    (f"PLATE_B03_s1_w1_thumb{GUID_A}.TIF", None),
    ("PLATE_B03_s1_w1.png", None),
    ("PLATE_B03_s1_w1_extra.TIF", None),
    ("notes.txt", None),
])
def test_parse_image_filename(name, expected):
    assert imagexpress.parse_image_filename(name) == expected


def test_thumbnails_are_ignored(tmp_path):
    folder = tmp_path / "thumbs"
    _write(folder / "PLATE_B03_s1_w1.TIF", _plane(1))
    _write(folder / "PLATE_B03_s1_w1_thumb.TIF", _plane(2, shape=(8, 10)))
    # A thumbnail alone must not add a well, a site or a channel.
    _write(folder / "PLATE_C05_s3_w2_thumb.TIF", _plane(3, shape=(8, 10)))
    (folder / "PLATE.HTD").write_text('"HTSInfoFile", Version 1.0\r\n"EndFile"\r\n')
    layout, files = read_layout(folder)
    assert layout.well_names == ["B03"]
    assert layout.sites == 1 and len(layout.channels) == 1
    assert layout.plane_shape == (32, 40)
    assert all("_thumb" not in p.name for p in files.values())
    np.testing.assert_array_equal(ImageXpressSource(folder).read_plane("B03", 1, 1), _plane(1))


def test_timepoint_and_zstep_folders(tmp_path):
    folder = tmp_path / "tz"
    for t in (1, 2):
        for z in (1, 2, 3):
            for wave in (1, 2):
                _write(folder / f"TimePoint_{t}" / f"ZStep_{z}" / f"PLATE_B03_s1_w{wave}.TIF",
                       _plane(100 * t + 10 * z + wave))
    layout, _ = read_layout(folder)
    assert (layout.z_planes, layout.timepoints) == (3, 2)
    assert len(layout.channels) == 2 and layout.sites == 1
    source = ImageXpressSource(folder)
    for t in (1, 2):
        for z in (1, 2, 3):
            for wave in (1, 2):
                np.testing.assert_array_equal(source.read_plane("B03", 1, wave, z, t),
                                              _plane(100 * t + 10 * z + wave))
    stack = source.read_stack(SiteUnit("B03", 1, 2), 1)
    assert stack.shape == (3, 32, 40)
    np.testing.assert_array_equal(stack[2], _plane(231))


def test_timepoint_folders_without_zsteps(tmp_path):
    folder = tmp_path / "t"
    for t in (1, 2, 3):
        _write(folder / f"TimePoint_{t}" / "PLATE_B03_s1_w1.TIF", _plane(t))
    layout, _ = read_layout(folder)
    assert (layout.z_planes, layout.timepoints) == (1, 3)
    np.testing.assert_array_equal(ImageXpressSource(folder).read_plane("B03", 1, 1, 1, 3), _plane(3))


def test_lowercase_tif_and_unrelated_files(tmp_path):
    folder = tmp_path / "lower"
    _write(folder / "plate_b03_s1_w1.tif", _plane(7))
    _write(folder / "plate_b03_s2_w1.tif", _plane(8))
    (folder / "notes.txt").write_text("not an image")
    _write(folder / "overview.tif", _plane(9))  # no well in the name
    layout, _ = read_layout(folder)
    assert layout.well_names == ["B03"]
    assert layout.sites == 2
    source = ImageXpressSource(folder)
    np.testing.assert_array_equal(source.read_plane("B03", 2, 1), _plane(8))


def test_htd_and_metaseries_metadata(tmp_path):
    """Channel names from the HTD, wavelength and pixel size from the TIFF description."""
    folder = tmp_path / "meta"
    folder.mkdir()
    (folder / "EXP.HTD").write_text('"HTSInfoFile", Version 1.0\r\n"XWells", 24\r\n"YWells", 16\r\n'
                                    '"WaveName1", "Hoechst"\r\n"WaveName2", "GFP"\r\n"EndFile"\r\n')
    for wave, nm in ((1, 452), (2, 510)):
        desc = ('<MetaData><PlaneInfo><prop id="spatial-calibration-x" type="float" value="1.3"/>'
                f'<prop id="wavelength" type="int" value="{nm}"/></PlaneInfo></MetaData>')
        tifffile.imwrite(folder / f"EXP_C07_s1_w{wave}.TIF", _plane(wave), description=desc, metadata=None)
    layout, _ = read_layout(folder)
    assert layout.name == "EXP"
    assert (layout.rows, layout.columns) == (16, 24)
    assert [c.name for c in layout.channels] == ["Hoechst", "GFP"]
    assert [c.emission_wavelength for c in layout.channels] == [452.0, 510.0]
    assert layout.pixel_size_um == pytest.approx(1.3)


def test_prefix_containing_a_well_like_token(tmp_path):
    folder = tmp_path / "prefix"
    _write(folder / "Assay_P01_B03_s1_w1.TIF", _plane(1))
    _write(folder / "Assay_P01_B04_s1_w1.TIF", _plane(2))
    assert imagexpress.parse_image_filename("Assay_P01_B03_s1_w1.TIF") == ("B03", 1, 1)
    layout, _ = read_layout(folder)
    assert layout.well_names == ["B03", "B04"]


# ---- (c) folders that are not plates -----------------------------------------------

def test_empty_folder_is_not_a_plate(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(NotAPlateError) as info:
        ImageXpressSource(folder)
    message = str(info.value)
    assert str(folder) in message
    assert "not an ImageXpress plate folder" in message
    assert "\n" not in message
    assert not is_plate_folder(folder)


def test_folder_of_unrelated_files_is_not_a_plate(tmp_path):
    folder = tmp_path / "unrelated"
    folder.mkdir()
    (folder / "README.txt").write_text("hello")
    (folder / "data.csv").write_text("a,b\n1,2\n")
    _write(folder / "photo.tif", _plane(1))
    _write(folder / "PLATE_B03_s1_w1_thumb.TIF", _plane(1))
    (folder / "TimePoint_1").mkdir()
    with pytest.raises(NotAPlateError, match="not an ImageXpress plate folder") as info:
        read_layout(folder)
    assert str(folder) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_htd_without_images_is_not_a_plate(tmp_path):
    folder = tmp_path / "htdonly"
    folder.mkdir()
    (folder / "P.HTD").write_text('"HTSInfoFile", Version 1.0\r\n"EndFile"\r\n')
    with pytest.raises(NotAPlateError, match="HTD.*no images"):
        read_layout(folder)


def test_missing_folder_and_file_are_not_plates(tmp_path):
    with pytest.raises(NotAPlateError, match="not a folder"):
        read_layout(tmp_path / "nowhere")
    (tmp_path / "file.TIF").write_text("x")
    with pytest.raises(NotAPlateError, match="not a folder"):
        read_layout(tmp_path / "file.TIF")


# ---- (d) missing planes ------------------------------------------------------------

def test_missing_plane_raises_file_not_found_naming_well_and_site(tmp_path):
    folder = tmp_path / "gap"
    _write(folder / "PLATE_B03_s1_w1.TIF", _plane(1))
    _write(folder / "PLATE_B03_s1_w2.TIF", _plane(2))
    _write(folder / "PLATE_B03_s2_w1.TIF", _plane(3))
    source = ImageXpressSource(folder)
    assert source.layout.sites == 2 and len(source.layout.channels) == 2
    np.testing.assert_array_equal(source.read_plane("B03", 2, 1), _plane(3))
    with pytest.raises(FileNotFoundError) as info:
        source.read_plane("B03", 2, 2)
    assert "B03" in str(info.value) and "site 2" in str(info.value)
    with pytest.raises(FileNotFoundError, match="C01"):
        source.read_plane("C01", 1, 1)


def test_plane_deleted_after_opening_raises_file_not_found(multi_plate, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(multi_plate.folder, copy)
    source = ImageXpressSource(copy)
    source.path_of("A02", 1, 1, 1, 1).unlink()
    with pytest.raises(FileNotFoundError):
        source.read_plane("A02", 1, 1, 1, 1)
