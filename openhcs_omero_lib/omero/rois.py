"""The objects a pipeline measured, saved as ROIs on each field's image, so that
OMERO.iviewer shows exactly which nuclei were counted.

One ROI per object and ``measure_objects`` step, holding its outline as polygons
(a ring has two: its outer and its inner edge), named ``<prefix> <label>``, with
the run's timepoint (``theT``) and, when the objects were found on one z plane, that
plane (``theZ``; on a projection of every plane it is unset, which the OME model reads
as "on every plane"); ``theC`` is unset: they were measured in every channel.

Polygons, not masks (OME's ``omero-rois``), because they keep the server's load
lower. Measured with the stand-in, which counts calls and Ice's bytes per operation
(``tests/test_omero_rois.py``, saving the same objects both ways): the save costs
the same calls either way (one ``IUpdate.saveAndReturnIds`` per :data:`BATCH` ROIs,
answered with IDs only); the bytes sent are close: masks about 8% fewer for nuclei of
150 px (278 against 300 bytes per ROI), polygons about 15% fewer for the same nuclei
magnified 4x (544 against 641), since a mask grows with an object's area and a
polygon with its outline. What decides is viewing, which is repeated: OMERO.iviewer
draws a mask as an image it fetches from the server, one ``render_shape_mask``
request per mask on every view (omero-iviewer ``src/viewers/viewer/utils/Style.js``),
each a query and a PNG rendered by OMERO.web (omero-web ``webgateway/views.py``),
while polygons come inside the ROI list the viewer loads once per page of 500 ROIs.

A ROI carries no namespace: its description holds the results' namespace, which is
how a re-run (and ``Delete_HCS_Results``) finds this bundle's ROIs and leaves others'.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import omero.gateway  # noqa: F401  (it loads the omero.model classes used here)
import omero.model
from omero.rtypes import rint, rstring

from openhcs_omero_lib.omero import queries as Q
from openhcs_omero_lib.omero.plate import all_groups, in_group, query_params

BATCH = 500
"""ROIs per save: about 150 kB per call, well under Ice.MessageSizeMax, and few calls
(a 2000-object field costs 4, a plate of small fields well under one per image)."""

DEFAULT_CAP = 2000
"""ROIs per image at most: a pipeline that splits noise into tens of thousands of
objects must not flood the server; OMERO.iviewer lists ROIs 500 to a page."""

STROKE_COLOURS = ((255, 212, 0), (0, 229, 255), (255, 79, 216), (125, 255, 79))
"""One per ``measure_objects`` step, as in the QC montage."""


def rgba_int(r: int, g: int, b: int, a: int = 255) -> int:
    """OMERO's colour: RGBA packed in a signed 32-bit integer."""
    value = (r << 24) | (g << 16) | (b << 8) | a
    return value - (1 << 32) if value >= 1 << 31 else value


def roi_z(load_z: str, z_planes: int) -> int | None:
    """The z plane the objects were found on (0-based), or None for a projection of
    every plane (``load.z`` max, mean, or a stack projected by a step)."""
    if z_planes == 1:
        return 0
    if load_z == "middle":
        return z_planes // 2
    return None


@dataclass(frozen=True)
class RoiChoice:
    """Save the run's objects as ROIs: at most ``cap`` per image, on plane ``z``
    (:func:`roi_z`)."""

    cap: int = DEFAULT_CAP
    z: int | None = None


@dataclass(frozen=True)
class PlannedRoi:
    image_id: int
    t: int
    prefix: str
    colour: int
    label: int
    polygons: list


@dataclass
class RoiPlan:
    """What a run saves: the ROIs in saving order and, per image that had more
    objects than the cap, ``(well, field, objects, saved)``."""

    cap: int
    rois: list[PlannedRoi] = field(default_factory=list)
    capped: list[tuple[str, int, int, int]] = field(default_factory=list)
    images: int = 0

    def summary(self) -> dict[str, Any]:
        """For the run's JSON: what was saved, and where the cap cut it short."""
        return {"cap_per_image": self.cap, "images": self.images, "rois": len(self.rois),
                "capped": [{"well": w, "field": f, "objects": n, "saved": s} for w, f, n, s in self.capped]}

    def note(self) -> str:
        """One line about the cap, or "" when no image reached it."""
        if not self.capped:
            return ""
        w, f, n, _ = self.capped[0]
        more = f" and {len(self.capped) - 1} more" if len(self.capped) > 1 else ""
        return (f"ROI cap of {self.cap} per image reached on {len(self.capped)} image(s) ({w} field {f}: "
                f"{n} objects{more}): only the first {self.cap} objects of each were saved")


def plan(outlines_by_unit: dict, image_ids: dict, cap: int) -> RoiPlan:
    """The ROIs of a run's outlines (unit -> prefix -> Outlines) on the images of
    ``image_ids`` (a layout's, by :attr:`~..layout.SiteUnit.image_key`): per image,
    objects in label order, each label's objects of every step together, up to ``cap``."""
    if cap < 1:
        raise ValueError(f"the ROI cap must be at least 1, got {cap}")
    result = RoiPlan(cap)
    per_image: dict[int, list[PlannedRoi]] = {}
    where: dict[int, tuple[str, int]] = {}
    for unit, by_prefix in outlines_by_unit.items():
        iid = image_ids.get(unit.image_key)
        if iid is None:
            continue
        where[iid] = (unit.well, unit.site)
        found = []
        for k, (prefix, outlines) in enumerate(by_prefix.items()):
            colour = rgba_int(*STROKE_COLOURS[k % len(STROKE_COLOURS)])
            for label, polys in outlines.by_object().items():
                found.append((label, k, PlannedRoi(iid, unit.timepoint - 1, prefix, colour, label, polys)))
        found.sort(key=lambda x: (x[0], x[1]))
        per_image.setdefault(iid, []).extend(r for _, _, r in found)
    for iid, rois in per_image.items():
        if len(rois) > cap:
            well, site = where[iid]
            result.capped.append((well, site, len(rois), cap))
        result.rois.extend(rois[:cap])
    result.images = sum(1 for rois in per_image.values() if rois)
    return result


def _points(poly) -> str:
    return " ".join(f"{x:g},{y:g}" for x, y in poly)


def roi_object(planned: PlannedRoi, ns: str, z: int | None) -> Any:
    roi = omero.model.RoiI()
    roi.setImage(omero.model.ImageI(planned.image_id, False))
    roi.setName(rstring(f"{planned.prefix} {planned.label}"))
    roi.setDescription(rstring(ns))
    for poly in planned.polygons:
        shape = omero.model.PolygonI()
        shape.setPoints(rstring(_points(poly)))
        shape.setTheT(rint(planned.t))
        if z is not None:
            shape.setTheZ(rint(z))
        shape.setStrokeColor(rint(planned.colour))
        shape.setFillColor(rint(rgba_int(0, 0, 0, 0)))
        roi.addShape(shape)
    return roi


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def save_rois(conn, planned: RoiPlan, ns: str, group_id: int, z: int | None, saved: list[int],
              batch: int | None = None) -> None:
    """Save the planned ROIs, ``batch`` at a time (default :data:`BATCH`), each batch in
    one call that answers with IDs only; the IDs go to ``saved`` as each batch is
    stored, so that a failure part-way leaves the caller knowing what to remove."""
    update = conn.getUpdateService()
    opts = in_group(conn, group_id)
    for chunk in _batches(planned.rois, batch or BATCH):
        saved.extend(update.saveAndReturnIds([roi_object(r, ns, z) for r in chunk], opts))


def find_rois(conn, image_ids: Sequence[int], ns: str, ns_prefix: bool = False) -> list[tuple[str, int, int]]:
    """``("Roi", ID, owner ID)`` of the ROIs on these images whose description is
    ``ns`` (or, with ``ns_prefix``, any namespace under it), across the user's groups;
    IDs only, 1000 images per query. (:func:`~.annotations.split_by_owner` keeps the
    user's own.)"""
    found: dict[tuple[str, int, int], None] = {}
    query = Q.ROIS_NS_PREFIX if ns_prefix else Q.ROIS
    ids = list(image_ids)
    service = conn.getQueryService()
    for start in range(0, len(ids), 1000):
        params = query_params(ids=ids[start:start + 1000], ns=ns.rstrip("/") + "/%" if ns_prefix else ns)
        for row in service.projection(query, params, all_groups(conn)):
            found[("Roi", row[0].getValue(), row[1].getValue())] = None
    return list(found)
