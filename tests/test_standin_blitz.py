"""The stand-in answers a BlitzGateway plate walk with the objects a server would.

A script walks a plate as ``conn.getObject("Plate", id)``, ``plate.listChildren()``,
``well.listChildren()``, ``sample.getImage()``, ``image.getPrimaryPixels().getPlane()``;
these tests run exactly that with real omero-py against the stand-in and compare
with the store and the instrument's files.
"""

from __future__ import annotations

import collections
import inspect

import numpy as np
import pytest

from omero_fixtures import calls_since, image_site, standin, well_names


@pytest.fixture(scope="module")
def server(small_plate):
    with standin() as server:
        server.plate_id = server.import_plate(small_plate.folder)
        other = server.add_group("other-lab")
        stranger = server.add_user("bob", "bob-password", [other])
        server.hidden_id = server.import_plate(small_plate.folder, name="HIDDEN", owner=stranger, group=other)
        server.screen_id = server.add_screen("screen", [server.plate_id])
        yield server


def test_get_object_plate_is_the_stored_plate(server, conn):
    plate = conn.getObject("Plate", server.plate_id)
    assert plate is not None and plate.getId() == server.plate_id
    assert plate.getName() == "SMALL"
    stored = server.store.get("Plate", server.plate_id)
    assert plate.getDetails().getOwner().getOmeName() == server.user.name
    assert plate._obj.getDetails().getGroup().getId().getValue() == server.store.group_of(stored)
    links = plate._obj.copyScreenLinks()
    assert [link.getParent().getName().getValue() for link in links] == ["screen"]


def test_get_object_does_not_show_other_groups_plates(server, conn):
    assert conn.getObject("Plate", server.hidden_id) is None
    assert conn.getObject("Plate", 10**9) is None


def test_plate_walk_reaches_every_field_in_order(server, conn, small_plate):
    plate = conn.getObject("Plate", server.plate_id)
    names = well_names(server.store, server.plate_id)
    walked = []
    for well in plate.listChildren():
        assert names[well.getId()] == f"{'ABCDEFGH'[well.row]}{well.column + 1:02d}"
        for index, sample in enumerate(well.listChildren()):
            image = sample.getImage()
            assert image_site(server.store, image.getId()) == (names[well.getId()], index + 1)
            walked.append((names[well.getId()], index + 1))
    expected = [(w, s) for w in sorted(set(names.values())) for s in range(1, small_plate.config.sites + 1)]
    assert sorted(walked) == expected


def test_primary_pixels_read_the_instruments_planes(server, conn, small_plate):
    from openhcs_omero_lib.plates.imagexpress import ImageXpressSource

    plate = conn.getObject("Plate", server.plate_id)
    names = well_names(server.store, server.plate_id)
    before = collections.Counter(server.calls)
    read = 0
    with ImageXpressSource(small_plate.folder) as ref:
        for well in list(plate.listChildren())[:2]:
            for index, sample in enumerate(well.listChildren()):
                image = sample.getImage()
                pixels = image.getPrimaryPixels()
                assert (image.getSizeX(), image.getSizeY()) == (small_plate.config.size,) * 2
                assert image.getSizeC() == small_plate.config.channels and image.getSizeZ() == 1
                assert pixels.getPixelsType().value == "uint16"
                for c in range(image.getSizeC()):
                    plane = pixels.getPlane(0, c, 0)
                    assert np.array_equal(plane, ref.read_plane(names[well.getId()], index + 1, c + 1))
                    read += 1
    delta = calls_since(server, before)
    images = read // small_plate.config.channels
    # what the usual script costs: a pixels load per image, a fresh store per plane
    assert delta["IContainer.getImages"] == images
    for op in ("ServiceFactory.createRawPixelsStore", "RawPixelsStore.setPixelsId", "RawPixelsStore.getPlane",
               "RawPixelsStore.close"):
        assert delta[op] == read, op
    assert server.open_stateful["RawPixelsStore"] == 0


def test_images_of_other_groups_are_not_loaded(server, conn):
    hidden_image = next(i for i in server.store.all("Image")
                        if server.store.group_of(i) != server.user.default_group)
    assert conn.getContainerService().getImages("Image", [hidden_image.getId().getValue()], None) == []


def test_container_service_refuses_what_it_does_not_model(server, conn):
    import omero

    with pytest.raises(omero.ApiUsageException) as info:
        conn.getContainerService().getImages("Dataset", [1], None)
    assert "does not model" in info.value.message


def test_other_hql_is_still_refused(server, conn):
    import omero
    import omero.sys

    from openhcs_omero_lib.testing.blitz import WELLS_OF_PLATE

    params = omero.sys.ParametersI()
    params.addLong("oid", server.plate_id)
    with pytest.raises(omero.ApiUsageException):
        conn.getQueryService().findAllByQuery(WELLS_OF_PLATE.replace("left outer join fetch ws.image as img ", ""),
                                              params)


def test_container_service_matches_the_real_proxy():
    import omero.api

    from openhcs_omero_lib.testing.blitz import ContainerService

    for name in ("getImages",):
        ours = [p for p in inspect.signature(getattr(ContainerService, name)).parameters
                if p not in ("self", "current")]
        theirs = [p for p in inspect.signature(getattr(omero.api.IContainerPrx, name)).parameters
                  if p not in ("self", "_ctx")]
        assert ours == theirs


def test_naive_script_measures_like_the_engine_and_attaches_a_csv(server, conn, small_plate):
    from openhcs_omero_lib import engine
    from openhcs_omero_lib.bench.naive import NAMESPACE, naive_script
    from openhcs_omero_lib.pipeline.loading import resolve_pipeline
    from openhcs_omero_lib.plates.imagexpress import ImageXpressSource

    spec = resolve_pipeline("nuclei_count")[0]
    rows = naive_script(conn, server.plate_id, spec)
    with ImageXpressSource(small_plate.folder) as source:
        expected = engine.run_pipeline(source, spec).images
    assert len(rows) == len(expected)
    got = {(r["well"], r["site"]): r for r in rows}
    for row in expected.itertuples():
        mine = got[(row.well, row.site)]
        assert mine["nuclei_count"] == row.nuclei_count
        assert mine["nuclei_area_mean"] == pytest.approx(row.nuclei_area_mean)
    anns = server.store.annotations_on("Plate", server.plate_id, NAMESPACE)
    assert len(anns) == 1
    text = server.store.file_text(anns[0].getFile().getId().getValue())
    assert text.splitlines()[0].startswith("well,site,timepoint,nuclei_count")
    assert len(text.splitlines()) == len(rows) + 1
