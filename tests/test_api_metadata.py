"""The metadata handler as a notebook uses it: get_*_values of a plate, from one cached
layout, through real omero-py over the stand-in; a subclass that reinterprets a plate."""

from __future__ import annotations

import pytest

from omero_fixtures import iquery_calls, standin


@pytest.fixture(scope="module")
def server(small_plate, multi_plate):
    with standin() as server:
        server.small_id = server.import_plate(small_plate.folder)
        server.multi_id = server.import_plate(multi_plate.folder)
        server.sparse_id = server.import_plate(small_plate.folder, name="SPARSE",
                                               missing=[("A01", 2), ("A02", 2)])
        yield server


@pytest.fixture
def fresh_cache():
    from openhcs_omero_lib.omero.plate import CACHE

    CACHE.clear()
    yield
    CACHE.clear()


def _questions(meta, plate):
    return {"channels": meta.get_channel_values(plate), "wells": meta.get_well_values(plate),
            "sites": meta.get_site_values(plate), "z": meta.get_z_index_values(plate),
            "t": meta.get_timepoint_values(plate), "custom": meta.get_custom_metadata(plate)}


def _folder_answers(folder):
    from openhcs_omero_lib.plates.imagexpress import ImageXpressSource

    with ImageXpressSource(folder) as source:
        layout = source.layout
    return {"channels": [c.name for c in layout.channels], "wells": layout.well_names,
            "sites": list(range(1, layout.sites + 1)), "z": list(range(1, layout.z_planes + 1)),
            "t": list(range(1, layout.timepoints + 1)), "custom": {}}


def test_the_answers_are_the_plates(server, conn, small_plate, multi_plate, fresh_cache):
    from openhcs_omero_lib.api import OMEROMetadataHandler

    meta = OMEROMetadataHandler(conn)
    assert _questions(meta, server.small_id) == _folder_answers(small_plate.folder)
    multi = _questions(meta, server.multi_id)
    assert multi == _folder_answers(multi_plate.folder)
    assert multi["z"] == [1, 2] and multi["t"] == [1, 2] and multi["channels"] == ["DAPI", "FITC"]
    # plain values, not model objects
    assert all(type(v) is str for v in multi["channels"] + multi["wells"])
    assert all(type(v) is int for v in multi["sites"] + multi["z"] + multi["t"])


def test_a_sparse_plate_lists_the_fields_some_well_has(server, conn, fresh_cache):
    from openhcs_omero_lib.api import OMEROMetadataHandler

    meta = OMEROMetadataHandler(conn)
    assert meta.get_site_values(server.sparse_id) == [1, 2]  # A03, A04 still have field 2
    assert meta.layout(server.sparse_id).n_fields == 6


def test_one_layout_per_plate_then_one_query_per_question(server, conn, fresh_cache):
    """Three queries for the first question; every later one (any question, any handler
    of the class) costs the fingerprint query alone; a change to the plate costs three again."""
    from openhcs_omero_lib.api import OMEROMetadataHandler

    meta = OMEROMetadataHandler(conn)
    before = iquery_calls(server)
    meta.get_channel_values(server.small_id)
    assert iquery_calls(server) - before == 3
    for ask in (meta.get_well_values, meta.get_site_values, meta.get_z_index_values, meta.get_timepoint_values,
                meta.get_channel_values, OMEROMetadataHandler(conn).get_well_values):
        before = iquery_calls(server)
        ask(server.small_id)
        assert iquery_calls(server) - before == 1, ask
    store = server.store
    well = store.children("Well", "plate", server.small_id)[0]
    store.touch(store.children("WellSample", "well", well.getId().getValue())[0])
    before = iquery_calls(server)
    meta.get_site_values(server.small_id)
    assert iquery_calls(server) - before == 3
    before = iquery_calls(server)
    meta.get_channel_values(server.small_id)
    assert iquery_calls(server) - before == 1
    # no cache: every question loads the layout
    uncached = OMEROMetadataHandler(conn, cache=None)
    before = iquery_calls(server)
    uncached.get_channel_values(server.small_id)
    uncached.get_well_values(server.small_id)
    assert iquery_calls(server) - before == 6


def test_a_plate_given_as_an_id_text_path_or_object(server, conn, fresh_cache):
    from openhcs_omero_lib.api import OMEROMetadataHandler

    meta = OMEROMetadataHandler(conn)
    pid = server.small_id
    wrapper = conn.getObject("Plate", pid)
    expected = meta.get_well_values(pid)
    for plate in (f"Plate:{pid}", f"plate:{pid}", f"/omero/plate_{pid}", f"/omero/plate_{pid}/", wrapper,
                  wrapper._obj):
        assert meta.get_well_values(plate) == expected, plate


@pytest.mark.parametrize("plate, words", [
    ("Well:3", ["expected a plate, got Well:3"]),
    ("/omero/plate_1/A01", ["is a well or a field"]),
    ("Dataset:3", ["'Dataset:3' is a Dataset"]),
    ("Plate:x", ["the ID must be a whole number"]),
    (0, ["plate IDs are positive"]),
    (987654, ["no Plate with ID 987654 (or you may not read it)"]),
])
def test_a_bad_plate_is_refused_with_one_line(server, conn, plate, words):
    from openhcs_omero_lib.api import OmeroInputError, OMEROMetadataHandler

    before = iquery_calls(server)
    with pytest.raises(OmeroInputError) as err:
        OMEROMetadataHandler(conn).get_channel_values(plate)
    for word in words:
        assert word in str(err.value), str(err.value)
    assert "\n" not in str(err.value)
    if not isinstance(plate, int) or plate < 1:
        assert iquery_calls(server) == before  # refused before asking the server


def test_without_a_connection_the_handler_says_so():
    from openhcs_omero_lib.api import OMEROMetadataHandler

    with pytest.raises(ValueError, match=r"OMEROMetadataHandler\(conn\)"):
        OMEROMetadataHandler().get_channel_values(1)


def _by_wavelength():
    """The example subclass: channel names from a facility's naming convention, and
    custom metadata from the layout (defined here so that omero is imported lazily)."""
    from openhcs_omero_lib.api import OMEROMetadataHandler

    class ByWavelength(OMEROMetadataHandler):
        NAMES = {"DAPI": "Hoechst", "FITC": "tubulin"}

        def channel_name(self, index, logical_channel):
            return self.NAMES.get(super().channel_name(index, logical_channel), f"w{index}")

        def get_custom_metadata(self, plate):
            channels = self.get_channel_values(plate)
            return {"dna_channel": channels.index("Hoechst") + 1, "wells": len(self.get_well_values(plate))}

    return ByWavelength


def test_a_subclass_reinterprets_the_plate_and_adds_its_own_metadata(server, conn, small_plate, fresh_cache):
    from openhcs_omero_lib.api import OMEROMetadataHandler, run_pipeline

    handler = _by_wavelength()(conn)
    before = iquery_calls(server)
    assert handler.get_channel_values(server.small_id) == ["Hoechst", "tubulin"]
    assert handler.get_custom_metadata(server.small_id) == {"dna_channel": 1, "wells": small_plate.config.wells}
    assert iquery_calls(server) - before == 3 + 2  # one layout, then a fingerprint per question
    # the default handler keeps its own interpretation, in its own cache entry
    assert OMEROMetadataHandler(conn).get_channel_values(server.small_id) == ["DAPI", "FITC"]
    # a run through the subclass sees its names: the nuclear channel by the subclass's name
    result = run_pipeline(server.small_id, "nuclei_count", conn=conn, workers=1, attach=(), handler=handler,
                          nuclear_channel="tubulin")
    assert [c["name"] for c in result.summary["plate"]["channels"]] == ["Hoechst", "tubulin"]
    assert result.summary["pipeline"]["spec"]["steps"][0]["input"] == "ch2"
