"""ROIs against the stand-in: what it accepts and refuses as OMERO does (omero-model
``roi.ome.xml``, omero-server ``OmeroInterceptor``, omero-blitz ``RoiI`` and the delete
rules), and the measurement behind saving outlines as polygons rather than masks."""

from __future__ import annotations

import numpy as np
import pytest

from omero_fixtures import gateway, plate_members, standin


@pytest.fixture(scope="module")
def server(tiny_plate):
    with standin(wire_metrics=True) as server:
        server.pid = server.import_plate(tiny_plate)
        server.images = plate_members(server.store, server.pid)["Image"]
        yield server


def _group(conn) -> int:
    return conn.getEventContext().groupId


def _polygon_roi(iid, points="1,1 10,1 10,10", t=0, z=None, c=None, ns="test/ns"):
    import omero.model
    from omero.rtypes import rint, rstring

    roi = omero.model.RoiI()
    roi.setImage(omero.model.ImageI(iid, False))
    roi.setDescription(rstring(ns))
    shape = omero.model.PolygonI()
    shape.setPoints(rstring(points))
    for setter, value in (("setTheT", t), ("setTheZ", z), ("setTheC", c)):
        if value is not None:
            getattr(shape, setter)(rint(value))
    roi.addShape(shape)
    return roi


def test_saved_rois_come_back_with_their_shapes_as_findbyimage_answers(server, conn):
    from openhcs_omero_lib.omero.plate import in_group

    iid = server.images[0]
    ids = conn.getUpdateService().saveAndReturnIds(
        [_polygon_roi(iid, t=0), _polygon_roi(iid, "0,0 96,0 96,96 0,96", t=0, z=0)], in_group(conn, _group(conn)))
    assert len(ids) == 2 and ids[0] < ids[1]
    result = conn.getRoiService().findByImage(iid, None, conn.SERVICE_OPTS)
    found = [r for r in result.rois if r.getId().getValue() in ids]
    assert [r.getId().getValue() for r in found] == ids
    shapes = [r.copyShapes()[0] for r in found]
    assert [s.getPoints().getValue() for s in shapes] == ["1,1 10,1 10,10", "0,0 96,0 96,96 0,96"]
    assert shapes[0].getTheZ() is None and shapes[1].getTheZ().getValue() == 0
    assert not shapes[0].getRoi().isLoaded()  # a reference back to its ROI
    assert {s.getId().getValue() for s in result.byZ[-1]} >= {shapes[0].getId().getValue()}
    assert {s.getId().getValue() for s in result.byT[0]} >= {s.getId().getValue() for s in shapes}
    assert not found[0].getImage().isLoaded() and found[0].getImage().getId().getValue() == iid


@pytest.mark.parametrize("case, error, reason", [
    ("no image", "ApiUsageException", "without an image"),
    ("no shape", "ApiUsageException", "without shapes"),
    ("t outside the image", "ValidationException", "theT = 1 is outside"),
    ("c outside the image", "ValidationException", "theC = 2 is outside"),
    ("two points", "ValidationException", "at least three"),
    ("point outside the image", "ValidationException", "outside the 96x96 image"),
    ("not points", "ValidationException", "at least three 'x,y' pairs"),
    ("shape alone", "ApiUsageException", "outside a new Roi"),
    ("an ellipse", "ApiUsageException", "saving Ellipse shapes"),
    ("a shape of no roi", "ValidationException", "point back at that Roi"),
    ("mask of wrong size", "ValidationException", "10x10 bits with 12 bytes"),
])
def test_what_the_stand_in_refuses(server, conn, case, error, reason):
    import omero
    import omero.model
    from omero.rtypes import rdouble, rint

    from openhcs_omero_lib.omero.plate import in_group

    iid = server.images[0]
    obj = _polygon_roi(iid)
    if case == "no image":
        obj.setImage(None)
    elif case == "no shape":
        obj.clearShapes()
    elif case == "t outside the image":
        obj = _polygon_roi(iid, t=1)  # one timepoint
    elif case == "c outside the image":
        obj = _polygon_roi(iid, c=2)  # two channels
    elif case == "two points":
        obj = _polygon_roi(iid, "1,1 2,2")
    elif case == "point outside the image":
        obj = _polygon_roi(iid, "1,1 97,1 5,5")  # 96 px
    elif case == "not points":
        obj = _polygon_roi(iid, "M 1 1 L 5 5 z")
    elif case == "shape alone":
        obj = obj.copyShapes()[0]
    elif case == "an ellipse":
        obj.clearShapes()
        obj.addShape(omero.model.EllipseI())
    elif case == "a shape of no roi":
        obj.copyShapes()[0].setRoi(None)
    elif case == "mask of wrong size":
        mask = omero.model.MaskI()
        for setter, value in (("setX", 0), ("setY", 0), ("setWidth", 10), ("setHeight", 10)):
            getattr(mask, setter)(rdouble(value))
        mask.setBytes(b"\xff" * 12)  # 100 bits need 13 bytes
        mask.setTheT(rint(0))
        obj.clearShapes()
        obj.addShape(mask)
    before = len(server.store.all("Roi"))
    with pytest.raises(getattr(omero, error)) as refused:
        conn.getUpdateService().saveAndReturnIds([obj], in_group(conn, _group(conn)))
    assert reason in refused.value.message
    assert len(server.store.all("Roi")) == before


def test_a_roi_must_be_written_in_its_images_group_with_annotate_rights(tiny_plate):
    import omero

    from openhcs_omero_lib.omero.plate import in_group

    with standin() as server:
        pid = server.import_plate(tiny_plate)
        iid = plate_members(server.store, pid)["Image"][0]
        elsewhere = server.add_group("elsewhere", "rwra--")
        server.user.groups.append(elsewhere.id)
        bob = server.add_user("bob", "bob-password", [server.add_group("read-only", "rwr---")])
        server.user.groups.append(bob.default_group)
        theirs = plate_members(server.store, server.import_plate(tiny_plate, owner=bob,
                                                                 group=server.store.groups[bob.default_group]))
        with gateway(server) as conn:
            update = conn.getUpdateService()
            with pytest.raises(omero.SecurityViolation, match="different groups|not in group"):
                update.saveAndReturnIds([_polygon_roi(iid)], in_group(conn, elsewhere.id))
            with pytest.raises(omero.SecurityViolation, match="may not annotate"):
                update.saveAndReturnIds([_polygon_roi(theirs["Image"][0])], in_group(conn, bob.default_group))
            assert len(update.saveAndReturnIds([_polygon_roi(iid)], in_group(conn, _group(conn)))) == 1


def test_deleting_a_roi_takes_its_shapes_and_deleting_an_image_its_rois(server, conn, tiny_plate):
    from openhcs_omero_lib.omero import annotations as A
    from openhcs_omero_lib.omero.plate import in_group
    from openhcs_omero_lib.testing.upload import upload_plate

    group = _group(conn)
    # An imported plate's images go only with their whole fileset (omero-blitz
    # blitz-delete-rules.xml): one image alone is deleted from a plate made through the API.
    kept, gone = server.images[1], plate_members(server.store, upload_plate(conn, tiny_plate))["Image"][0]
    ids = conn.getUpdateService().saveAndReturnIds([_polygon_roi(kept), _polygon_roi(kept), _polygon_roi(gone)],
                                                   in_group(conn, group))
    shapes = lambda: {s.getId().getValue() for s in server.store.all("Polygon")}  # noqa: E731
    before = shapes()
    A.delete_objects(conn, {"Roi": [ids[0]]}, group)
    assert server.store.get("Roi", ids[0]) is None and server.store.get("Roi", ids[1]) is not None
    assert len(before - shapes()) == 1
    A.delete_objects(conn, {"Image": [gone]}, group)
    assert server.store.get("Roi", ids[2]) is None and len(before - shapes()) == 2


def _field_labels(tiny_plate):
    """Each field's nuclei labels, as the pipeline measured them."""
    from openhcs_omero_lib import engine
    from openhcs_omero_lib.pipeline.loading import resolve_pipeline
    from openhcs_omero_lib.pipeline.run import run_unit
    from openhcs_omero_lib.plates.imagexpress import ImageXpressSource

    labels = {}
    with ImageXpressSource(tiny_plate) as source:
        spec = engine.bind(resolve_pipeline("nuclei_count")[0], source.layout)
        for unit in source.layout.units():
            found = {}
            run_unit(spec, lambda c, unit=unit: source.read_stack(unit, c), found)
            labels[unit] = found["nuclei"]
    return labels


def _save_cost(server, conn, rois) -> dict[str, int]:
    from openhcs_omero_lib.omero import rois as R
    from openhcs_omero_lib.omero.plate import in_group

    before = server.wire_bytes().get("saveAndReturnIds", {"calls": 0, "request_bytes": 0, "reply_bytes": 0})
    for start in range(0, len(rois), R.BATCH):
        conn.getUpdateService().saveAndReturnIds(rois[start:start + R.BATCH], in_group(conn, _group(conn)))
    after = server.wire_bytes()["saveAndReturnIds"]
    return {k: after[k] - before[k] for k in after}


def test_polygons_and_masks_cost_the_same_calls_and_similar_bytes(server, conn, tiny_plate, tmp_path):
    """The measurement behind choosing polygons (omero/rois.py): saving the same objects
    as our polygons and as omero-rois masks, at the plate's scale and magnified 4x (on
    an image 4x as large)."""
    import omero.model
    import omero_rois
    from omero.rtypes import rstring

    from openhcs_omero_lib.omero import rois as R
    from openhcs_omero_lib.pipeline.outlines import unit_outlines
    from openhcs_omero_lib.plates import synthetic

    labels = _field_labels(tiny_plate)
    unit = max(labels, key=lambda u: labels[u].max())
    big = tmp_path / "big"
    synthetic.make_plate(big, synthetic.SyntheticPlateConfig(wells=1, sites=1, channels=2, size=4 * 96, name="BIG"))
    images = {1: server.images[0], 4: plate_members(server.store, server.import_plate(big))["Image"][0]}
    costs = {}
    for scale, iid in images.items():
        field = np.kron(labels[unit], np.ones((scale, scale), dtype=labels[unit].dtype))
        plan = R.plan({unit: unit_outlines({"nuclei": field})}, {unit.image_key: iid}, R.DEFAULT_CAP)
        polygons = [R.roi_object(r, "test/polygons", 0) for r in plan.rois]
        masks = []
        for mask in omero_rois.masks_from_label_image(field, rgba=(255, 212, 0, 255), z=0, t=0):
            roi = omero.model.RoiI()
            roi.setImage(omero.model.ImageI(iid, False))
            roi.setDescription(rstring("test/masks"))
            roi.addShape(mask)
            masks.append(roi)
        assert len(polygons) == len(masks) == int(field.max()) > 0
        costs[scale] = {"polygons": _save_cost(server, conn, polygons), "masks": _save_cost(server, conn, masks),
                        "objects": len(masks), "mean_area": float((field > 0).sum() / len(masks))}
    print(costs)  # the README's figures come from here (pytest -s)
    for cost in costs.values():
        assert cost["polygons"]["calls"] == cost["masks"]["calls"] == 1
        assert cost["polygons"]["reply_bytes"] == cost["masks"]["reply_bytes"]  # IDs only
    small, large = costs[1], costs[4]
    # Small nuclei: masks are a little lighter to send; magnified, polygons are.
    assert small["masks"]["request_bytes"] < small["polygons"]["request_bytes"] < 1.5 * small["masks"]["request_bytes"]
    assert large["polygons"]["request_bytes"] < large["masks"]["request_bytes"]
