"""Plate layouts from OMERO: cost in round trips, caching, fidelity to the plate, groups."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from omero_fixtures import gateway, image_site, iquery_calls, standin, well_names


@dataclass
class Loaded:
    plate_id: int
    plate: Any
    cache: Any
    first_cost: int


@pytest.fixture(scope="module")
def server():
    with standin() as server:
        yield server


@pytest.fixture(scope="module")
def loaded384(server, conn, fake_384_plate):
    """The 384-well plate imported and loaded once, into a cache of its own."""
    from openhcs_omero_lib.omero.plate import PlateCache, load_plate

    folder, _ = fake_384_plate
    pid = server.import_plate(folder)
    cache = PlateCache()
    before = iquery_calls(server)
    plate = load_plate(conn, pid, cache=cache)
    return Loaded(pid, plate, cache, iquery_calls(server) - before)


def test_384_well_layout_costs_three_queries_then_one_until_the_plate_changes(server, conn, loaded384):
    from openhcs_omero_lib.omero.plate import load_plate

    assert loaded384.first_cost <= 3
    before = iquery_calls(server)
    again = load_plate(conn, loaded384.plate_id, cache=loaded384.cache)
    assert iquery_calls(server) - before == 1  # the fingerprint only
    assert again.layout == loaded384.plate.layout
    assert again.pixels_ids == loaded384.plate.pixels_ids

    # A field of the plate is modified (the server moves its update event).
    store = server.store
    well = store.children("Well", "plate", loaded384.plate_id)[-1]
    store.touch(store.children("WellSample", "well", well.getId().getValue())[0])
    before = iquery_calls(server)
    reloaded = load_plate(conn, loaded384.plate_id, cache=loaded384.cache)
    assert iquery_calls(server) - before == 3
    assert reloaded.layout == loaded384.plate.layout
    assert reloaded.fingerprint != loaded384.plate.fingerprint
    # ... and the refreshed entry is used from now on
    before = iquery_calls(server)
    load_plate(conn, loaded384.plate_id, cache=loaded384.cache)
    assert iquery_calls(server) - before == 1


def test_a_metadata_handler_reinterprets_names_fields_and_channels(server, conn, loaded384):
    """The extension point sees plain rows (plate summary, one row per field) and the
    first image's pixels and channels, and what it returns is the layout."""
    from openhcs_omero_lib.omero.metadata import OMEROMetadataHandler
    from openhcs_omero_lib.omero.plate import load_plate

    plain = loaded384.plate
    sites = plain.layout.sites
    seen = []

    class Renamed(OMEROMetadataHandler):
        def plate_name(self, plate):
            return f"screen-{plate.id}"

        def site_of(self, field, first_index):
            seen.append(field)
            return sites - (field.index - first_index)  # as if fields were stored last first

        def channel_name(self, index, logical_channel):
            return f"{super().channel_name(index, logical_channel)}-renamed"

    plate = load_plate(conn, loaded384.plate_id, handler=Renamed(), cache=None)
    assert plate.layout.name == f"screen-{loaded384.plate_id}"
    assert [c.name for c in plate.layout.channels] == [f"{c.name}-renamed" for c in plain.layout.channels]
    assert len(seen) == len(plain.pixels_ids) and all(isinstance(f.image_id, int) for f in seen)
    for (well, site, run), pixels_id in plain.pixels_ids.items():
        assert plate.pixels_ids[(well, sites + 1 - site, run)] == pixels_id


def test_384_well_layout_matches_the_folder(server, loaded384, fake_384_plate):
    from openhcs_omero_lib.plates.imagexpress import ImageXpressSource

    folder, generated = fake_384_plate
    layout = loaded384.plate.layout
    with ImageXpressSource(folder) as source:
        ref = source.layout
    assert (len(ref.wells), ref.sites, len(ref.channels)) == (len(generated.wells), generated.sites,
                                                             len(generated.channels))
    assert layout.name == ref.name
    assert (layout.rows, layout.columns) == (ref.rows, ref.columns)
    assert [(w.row, w.column) for w in layout.wells] == [(w.row, w.column) for w in ref.wells]
    assert layout.sites == ref.sites
    assert [(c.index, c.name) for c in layout.channels] == [(c.index, c.name) for c in ref.channels]
    assert [c.emission_wavelength for c in layout.channels] == \
        pytest.approx([c.emission_wavelength for c in ref.channels])
    assert all(c.emission_wavelength for c in layout.channels)
    assert (layout.z_planes, layout.timepoints) == (ref.z_planes, ref.timepoints)
    assert layout.plane_shape == ref.plane_shape
    assert layout.dtype == ref.dtype
    assert layout.pixel_size_um == pytest.approx(ref.pixel_size_um)
    assert layout.plate_id == loaded384.plate_id == loaded384.plate.id

    # Wells carry their OMERO IDs; images and pixels are those of the right field.
    store = server.store
    assert {w.id: w.name for w in layout.wells} == well_names(store, loaded384.plate_id)
    keys = {(w.name, s, None) for w in layout.wells for s in range(1, layout.sites + 1)}
    assert set(layout.image_ids) == keys == set(loaded384.plate.pixels_ids)
    for key, image_id in layout.image_ids.items():
        assert image_site(store, image_id) == key[:2]
        pixels = store.get("Pixels", loaded384.plate.pixels_ids[key])
        assert pixels.getImage().getId().getValue() == image_id
    assert loaded384.plate.group_id == server.group.id


def test_virtual_filenames_parse_back_for_every_plane(loaded384, fake_384_plate):
    from openhcs_omero_lib.plates.imagexpress import parse_image_filename
    from openhcs_omero_lib.plates.virtual_backend import PlaneCoord, VirtualBackend

    folder, generated = fake_384_plate
    layout = loaded384.plate.layout
    backend = VirtualBackend(layout)
    assert backend.root == f"/omero/plate_{loaded384.plate_id}"
    paths = list(backend.list_files())
    assert len(paths) == len(set(paths)) == len(generated.wells) * generated.sites * len(generated.channels)
    coords = [backend.parse(p) for p in paths]
    assert coords == list(backend.coords())
    assert [backend.path(c) for c in coords] == paths
    # The same planes as the instrument's files (this plate has one z and one t).
    on_disk = set()
    for path in (folder / "TimePoint_1").iterdir():
        parsed = parse_image_filename(path.name)
        if parsed is not None:
            well, site, wave = parsed
            on_disk.add(PlaneCoord(well, site, wave, 1, 1))
    assert set(coords) == on_disk


def test_adding_a_field_invalidates_the_cached_layout(server, conn, small_plate):
    import omero.model

    from openhcs_omero_lib.omero.plate import PlateCache, load_plate

    pid = server.import_plate(small_plate.folder)
    donor = server.import_plate(small_plate.folder, name="donor")
    cache = PlateCache()
    first = load_plate(conn, pid, cache=cache)
    before = iquery_calls(server)
    assert load_plate(conn, pid, cache=cache) is first
    assert iquery_calls(server) - before == 1

    # A third field for well A01: an image from the donor plate, as a new WellSample.
    store = server.store
    a01 = next(wid for wid, name in well_names(store, pid).items() if name == "A01")
    donor_image = next(iter(load_plate(conn, donor, cache=None).layout.image_ids.values()))
    ws = omero.model.WellSampleI()
    ws.setWell(omero.model.WellI(a01, False))
    ws.setImage(omero.model.ImageI(donor_image, False))
    store.add(ws, server.user, server.group.id, {"well": a01})

    before = iquery_calls(server)
    changed = load_plate(conn, pid, cache=cache)
    assert iquery_calls(server) - before == 3
    assert changed.layout.sites == small_plate.config.sites + 1
    assert changed.layout.image_ids[("A01", small_plate.config.sites + 1, None)] == donor_image

    # A change to the plate object itself counts too.
    store.touch(store.get("Plate", pid))
    before = iquery_calls(server)
    load_plate(conn, pid, cache=cache)
    assert iquery_calls(server) - before == 3


def test_plate_in_another_group_of_the_user_loads_and_reads(server, small_plate):
    from openhcs_omero_lib.omero.pixels import OmeroPixelSource
    from openhcs_omero_lib.omero.plate import PlateCache, load_plate
    from openhcs_omero_lib.plates.imagexpress import ImageXpressSource

    second = server.add_group("second-lab", "rw----")
    server.add_user("bob", "bob-password", [server.group, second])  # default group: the first
    pid = server.import_plate(small_plate.folder, owner=server.store.users["bob"], group=second)
    with gateway(server, "bob", "bob-password") as conn:
        group_before = conn.SERVICE_OPTS.getOmeroGroup()
        plate = load_plate(conn, pid, cache=PlateCache())
        assert plate.group_id == second.id
        assert len(plate.layout.wells) == small_plate.config.wells
        assert conn.SERVICE_OPTS.getOmeroGroup() == group_before  # the connection is left as it was
        # pixels are read in the plate's group too
        well = plate.layout.wells[0].name
        with OmeroPixelSource(conn, plate) as source, ImageXpressSource(small_plate.folder) as ref:
            assert (source.read_plane(well, 1, 1) == ref.read_plane(well, 1, 1)).all()


def test_plate_in_a_group_the_user_is_not_in_is_not_found(server, conn, small_plate):
    from openhcs_omero_lib.omero.plate import OmeroInputError, PlateCache, load_plate

    closed = server.add_group("closed-lab", "rw----")
    carol = server.add_user("carol", "carol-password", [closed])
    pid = server.import_plate(small_plate.folder, owner=carol, group=closed)
    with pytest.raises(OmeroInputError) as info:
        load_plate(conn, pid, cache=PlateCache())
    assert str(pid) in str(info.value)
    assert "Plate" in str(info.value)
