"""The stand-in's ROIs: saving new ROIs of polygons or masks on an image, reading
them back as ``IRoi.findByImage`` does, finding the bundle's own by description
(:data:`~openhcs_omero_lib.omero.queries.ROIS`), and deleting them.

Modelled on OMERO's sources:

- omero-model ``mappings/roi.ome.xml``: a Roi has a name, a description, an image and
  an ordered list of shapes, each of which points back at its Roi (``roi`` is a
  many-to-one, not optional); a Shape has ``theZ``, ``theT``, ``theC``, colours and a
  transform; a Polygon ``points``; a Mask ``x``, ``y``, ``width``, ``height``,
  ``bytes`` (and ``pixels``).
- omero-server ``OmeroInterceptor.evaluateLinkages`` / ``neededRight``: the Roi's
  image must be in the group the ROI is written in, and pointing a Roi at an Image
  needs the ANNOTATE right on it, as an annotation link does.
- omero-server ``UpdateImpl.saveAndReturnIds``: one ID per top-level object, in order.
- omero-blitz ``graph-rules/blitz-delete-rules.xml``: deleting an image deletes its
  ROIs ("Image[D].rois"), deleting a ROI deletes its shapes ("Roi[D].shapes").
- omero-blitz ``RoiI.findByImage``: the image's ROIs ordered by ID with their shapes
  loaded, and ``byZ``/``byT`` indexes of the shapes (-1 for an unset plane).

Stricter than the server where unsure: a ROI needs an image and at least one shape;
only Polygon and Mask shapes, without transforms, annotations or folders; ``theZ``,
``theC``, ``theT`` must lie inside the image; polygon points must be at least three
``x,y`` pairs inside the image, and a mask's bytes exactly its width x height bits
inside the image; ``findByImage`` takes no options. Returned shapes point at their
Roi by an unloaded reference.
"""

from __future__ import annotations

import copy
import math
import re
from typing import Any

import omero
import omero.api
import omero.model
from omero.rtypes import unwrap

from openhcs_omero_lib.omero import queries as Q
from openhcs_omero_lib.testing._servant import StandInServant, servant
from openhcs_omero_lib.testing.store import class_name
from openhcs_omero_lib.testing.wire import ctx_group, fill, param, shell

SHAPES = ("Polygon", "Mask")
_PAIR = re.compile(r"^(-?\d+(?:\.\d+)?(?:e-?\d+)?),(-?\d+(?:\.\d+)?(?:e-?\d+)?)$")



def _unmodelled(what: str) -> omero.ApiUsageException:
    return omero.ApiUsageException(message=f"the OMERO stand-in does not model {what}")


# ---- IUpdate ---------------------------------------------------------------------------------

def save(update_service, obj: Any, group: int) -> Any | None:
    """The stored Roi for a new Roi, or None for other objects; shapes are saved only
    inside a new Roi."""
    kind = class_name(obj)
    if kind in SHAPES or kind == "Shape":
        raise _unmodelled(f"saving a {kind} outside a new Roi")
    if kind != "Roi":
        return None
    if obj.getId() is not None:
        if not obj.isLoaded():
            return None  # a reference to an existing Roi: as any other
        raise _unmodelled("changing a saved Roi")
    store, session = update_service.server.store, update_service.session
    if obj.getSource() is not None or obj._folderLinksSeq or obj._annotationLinksSeq:
        raise _unmodelled("saving a Roi with a source file, folders or annotations")
    ref = obj.getImage()
    if ref is None or ref.getId() is None:
        raise _unmodelled("saving a Roi without an image")
    iid = ref.getId().getValue()
    image = store.get("Image", iid)
    if image is None:
        raise omero.ValidationException(message=f"Image:{iid} does not exist")
    if not store.visible(image, session, group):
        raise omero.SecurityViolation(message=f"Image:{iid} is not in group {group} or not readable")
    if store.group_of(image) != group:  # OmeroInterceptor.throwIfGroupsDontMatch
        raise omero.SecurityViolation(message="cannot link objects of different groups")
    if not store.may_annotate(image, session):  # neededRight: ANNOTATE for Roi -> Image
        raise omero.SecurityViolation(message=f"user {session.user.name} may not annotate Image:{iid}")
    pixels = store.children("Pixels", "image", iid)[0]
    shapes = obj.copyShapes()
    if not shapes:
        raise _unmodelled("saving a Roi without shapes")
    for shape in shapes:
        _check_shape(shape, obj, pixels)
    with store.lock:
        new = copy.copy(obj)
        new._details = omero.model.DetailsI()
        new._shapesSeq = []
        new.setImage(omero.model.ImageI(iid, False))
        stored = store.add(new, session.user, group, {"image": iid})
        rid = stored.getId().getValue()
        kept = []
        for shape in shapes:
            s = copy.copy(shape)
            s._details = omero.model.DetailsI()
            s.setRoi(omero.model.RoiI(rid, False))
            kept.append(store.add(s, session.user, group, {"roi": rid}))
        stored._shapesSeq = kept
        stored._shapesLoaded = True
    return stored


def _check_shape(shape: Any, roi: Any, pixels: Any) -> None:
    kind = class_name(shape)
    if kind not in SHAPES:
        raise _unmodelled(f"saving {kind} shapes")
    if shape.getId() is not None:
        raise _unmodelled("saving a saved shape into a new Roi")
    if shape.getRoi() is not roi:  # Shape.roi is required: omero-py's Roi.addShape sets it
        raise omero.ValidationException(message=f"a {kind} in Roi.shapes must point back at that Roi")
    if shape.getTransform() is not None or shape._annotationLinksSeq:
        raise _unmodelled("saving shapes with transforms or annotations")
    sizes = {"theZ": pixels.getSizeZ().getValue(), "theC": pixels.getSizeC().getValue(),
             "theT": pixels.getSizeT().getValue()}
    for name, size in sizes.items():
        value = unwrap(getattr(shape, "get" + name[0].upper() + name[1:])())
        if value is not None and not 0 <= value < size:
            raise omero.ValidationException(message=f"{kind}.{name} = {value} is outside the image (size {size})")
    width, height = pixels.getSizeX().getValue(), pixels.getSizeY().getValue()
    if kind == "Polygon":
        text = unwrap(shape.getPoints()) or ""
        pairs = [_PAIR.match(p) for p in text.split()]
        if len(pairs) < 3 or not all(pairs):
            raise omero.ValidationException(message=f"Polygon points must be at least three 'x,y' pairs: {text[:80]!r}")
        for m in pairs:
            x, y = float(m[1]), float(m[2])
            if not (0 <= x <= width and 0 <= y <= height):
                raise omero.ValidationException(message=f"Polygon point {x},{y} is outside the {width}x{height} image")
    else:
        if shape.getPixels() is not None:
            raise _unmodelled("masks linked to pixels")
        box = [unwrap(getattr(shape, g)()) for g in ("getX", "getY", "getWidth", "getHeight")]
        if any(v is None for v in box):
            raise omero.ValidationException(message="a Mask needs x, y, width and height")
        x, y, w, h = box
        if w < 1 or h < 1 or x < 0 or y < 0 or x + w > width or y + h > height:
            raise omero.ValidationException(message=f"Mask {x},{y} {w}x{h} is outside the {width}x{height} image")
        data = shape.getBytes() or b""
        if len(data) != math.ceil(int(w) * int(h) / 8):
            raise omero.ValidationException(message=f"Mask of {int(w)}x{int(h)} bits with {len(data)} bytes")


# ---- IQuery ----------------------------------------------------------------------------------

def project(query_service, text: str, params, current) -> list[list[Any]] | None:
    """Rows of :data:`Q.ROIS` / :data:`Q.ROIS_NS_PREFIX`, or None for other texts."""
    if text not in (" ".join(Q.ROIS.split()), " ".join(Q.ROIS_NS_PREFIX.split())):
        return None
    ids, ns = param(params, "ids"), param(params, "ns")
    like = text == " ".join(Q.ROIS_NS_PREFIX.split())
    store = query_service.server.store
    rows = []
    for iid in sorted(set(ids)):
        for roi in store.children("Roi", "image", iid):
            if not query_service._visible(roi, current):
                continue
            desc = unwrap(roi.getDescription()) or ""
            if desc.startswith(ns.rstrip("%")) if like else desc == ns:
                rows.append([omero.rtypes.rlong(roi.getId().getValue()), omero.rtypes.rlong(store.owner_of(roi))])
    return rows


# ---- IRoi ------------------------------------------------------------------------------------

@servant(omero.api.IRoi, "IRoi")
class RoiService(StandInServant, omero.api.IRoi):
    def findByImage(self, imageId, opts, current=None):
        if opts is not None and any(v not in (None, []) for v in
                                    (opts.shapes, opts.limit, opts.offset, opts.userId, opts.groupId)):
            raise _unmodelled("IRoi.findByImage with options")
        store = self.server.store
        image = store.get("Image", imageId)
        rois = []
        by_z: dict[int, list] = {}
        by_t: dict[int, list] = {}
        if image is not None and store.visible(image, self.session, ctx_group(current)):
            for roi in sorted(store.children("Roi", "image", imageId), key=lambda r: r.getId().getValue()):
                if not store.visible(roi, self.session, ctx_group(current)):
                    continue
                out = shell(roi)
                out.setImage(omero.model.ImageI(imageId, False))
                shapes = []
                for shape in roi._shapesSeq:
                    if store.get(class_name(shape), shape.getId().getValue()) is None:
                        continue
                    sc = shell(shape)
                    sc.setRoi(omero.model.RoiI(roi.getId().getValue(), False))
                    shapes.append(sc)
                    by_z.setdefault(unwrap(shape.getTheZ()) if shape.getTheZ() is not None else -1, []).append(sc)
                    by_t.setdefault(unwrap(shape.getTheT()) if shape.getTheT() is not None else -1, []).append(sc)
                fill(out, "_shapesSeq", shapes)
                rois.append(out)
        return omero.api.RoiResult(opts=opts, rois=rois, byZ=by_z, byT=by_t)


# ---- Delete2 ---------------------------------------------------------------------------------

def delete_targets(store, targets: dict[str, list[int]]) -> dict[str, list[int]]:
    """``targets`` with the ROIs of deleted images and the shapes of deleted ROIs."""
    out = {kind: list(ids) for kind, ids in targets.items()}
    rois = list(out.get("Roi", []))
    for iid in out.get("Image", []):
        rois += [r.getId().getValue() for r in store.children("Roi", "image", iid) if r.getId().getValue() not in rois]
    if rois:
        out["Roi"] = rois
    for rid in rois:
        roi = store.get("Roi", rid)
        for shape in (roi._shapesSeq if roi is not None else []):
            ids = out.setdefault(class_name(shape), [])
            if shape.getId().getValue() not in ids:
                ids.append(shape.getId().getValue())
    return out


__all__ = ["RoiService", "SHAPES", "delete_targets", "project", "save"]
