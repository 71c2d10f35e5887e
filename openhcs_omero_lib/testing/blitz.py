"""What BlitzGateway asks when a script walks a plate, answered from the stand-in's store.

A script written the usual way::

    plate = conn.getObject("Plate", plate_id)
    for well in plate.listChildren():
        for sample in well.listChildren():
            image = sample.getImage()
            plane = image.getPrimaryPixels().getPlane(z, c, t)

sends two HQL texts the adapter never sends (:data:`PLATE_BY_IDS`,
:data:`WELLS_OF_PLATE`; a client listing the plate's runs a third,
:data:`PLATE_ACQUISITIONS`) and loads each image's pixels with ``IContainer.getImages``
(:class:`ContainerService`). They are modelled here, apart from the adapter's queries,
so that the benchmark can run such a script against the stand-in for real. Any other
text is still refused.
"""

from __future__ import annotations

import copy
from typing import Any

import omero
import omero.api
import omero.model
from omero.rtypes import rstring

from openhcs_omero_lib.testing._servant import StandInServant, servant
from openhcs_omero_lib.testing.wire import ctx_group, fill, param, ref, shell

# omero.gateway.BlitzGateway.getObject("Plate", id), i.e. PlateWrapper's query with
# the ID clause buildQuery adds. Whitespace is normalised before comparing.
PLATE_BY_IDS = (
    "select obj from Plate as obj "
    "join fetch obj.details.owner as owner "
    "join fetch obj.details.creationEvent "
    "left outer join fetch obj.screenLinks spl "
    "left outer join fetch spl.parent sc "
    "where obj.id in (:ids)"
)

# PlateWrapper.listChildren(): the wells with their fields and (unloaded-pixels) images.
WELLS_OF_PLATE = (
    "select well from Well as well "
    "join fetch well.details.creationEvent "
    "join fetch well.details.owner "
    "join fetch well.details.group "
    "left outer join fetch well.plate as pt "
    "left outer join fetch well.wellSamples as ws "
    "left outer join fetch ws.image as img "
    "where well.plate.id = :oid"
)


# PlateWrapper.listPlateAcquisitions(): the plate's runs, with the plate fetched.
PLATE_ACQUISITIONS = "select pa from PlateAcquisition as pa join fetch pa.plate as p where p.id=:pid"



def answer(query_service, text: str, params, current) -> list[Any] | None:
    """Objects for one of the texts above, or None when ``text`` is not one of them."""
    if text == PLATE_BY_IDS:
        return [p for pid in param(params, "ids") if (p := _plate(query_service, pid, current)) is not None]
    if text == WELLS_OF_PLATE:
        return _wells(query_service, param(params, "oid"), current)
    if text == PLATE_ACQUISITIONS:
        return _acquisitions(query_service, param(params, "pid"), current)
    return None


def _acquisitions(query_service, pid: int, current) -> list[Any]:
    store = query_service.server.store
    plate = store.get("Plate", pid)
    if not query_service._visible(plate, current):
        return []
    runs = []
    for run in sorted(store.children("PlateAcquisition", "plate", pid), key=lambda r: r.getId().getValue()):
        found = shell(run)
        found.setPlate(shell(plate))
        runs.append(found)
    return runs


def _owner(store, obj) -> Any:
    owner_id = store.owner_of(obj)
    user = next(u for u in store.users.values() if u.id == owner_id)
    out = omero.model.ExperimenterI(owner_id, True)
    out.setOmeName(rstring(user.name))
    return out


def _with_details(store, original, shell, *, group: bool = False) -> Any:
    """The fetched details: owner loaded, and a creation event (the stand-in keeps one
    event per object, so the creation event is the one it recorded)."""
    details = shell.getDetails()
    details.setOwner(_owner(store, original))
    details.setCreationEvent(omero.model.EventI(original.getDetails().getUpdateEvent().getId().getValue(), True))
    if group:
        gid = store.group_of(original)
        loaded = omero.model.ExperimenterGroupI(gid, True)
        loaded.setName(rstring(store.groups[gid].name))
        details.setGroup(loaded)
    return shell


def _plate(query_service, pid: int, current) -> Any | None:
    store = query_service.server.store
    plate = store.get("Plate", pid)
    if not query_service._visible(plate, current):
        return None
    out = _with_details(store, plate, shell(plate))
    links = []
    for link in store.all("ScreenPlateLink"):
        if link.getChild().getId().getValue() != pid:
            continue
        screen = store.get("Screen", link.getParent().getId().getValue())
        if screen is None or not query_service._visible(screen, current):
            continue
        found = shell(link)
        found.setParent(shell(screen))
        found.setChild(ref(plate))
        links.append(found)
    fill(out, "_screenLinksSeq", links)
    return out


def _wells(query_service, pid: int, current) -> list[Any]:
    """Each well once (the client keys them by position, so the duplicate rows a
    collection fetch join gives on a real server make no difference), its fetched
    well samples at their list index: Hibernate fills the gaps of an indexed list
    (a sparse well's missing field) with nulls, so a client walking
    ``well.listChildren()`` meets them."""
    store = query_service.server.store
    plate = store.get("Plate", pid)
    if not query_service._visible(plate, current):
        return []
    plate_shell = shell(plate)
    wells = []
    for well in sorted(store.children("Well", "plate", pid), key=lambda w: w.getId().getValue()):
        w = _with_details(store, well, shell(well), group=True)
        w.setPlate(plate_shell)
        present = store.children("WellSample", "well", well.getId().getValue())
        samples = [None] * (max((store.list_index[ws.getId().getValue()] for ws in present), default=-1) + 1)
        for ws in present:
            sample = shell(ws)
            sample.setWell(ref(well))
            sample.setImage(shell(store.get("Image", ws.getImage().getId().getValue())))
            if ws.getPlateAcquisition() is not None:
                sample.setPlateAcquisition(ref(ws.getPlateAcquisition()))
            samples[store.list_index[ws.getId().getValue()]] = sample
        fill(w, "_wellSamplesSeq", samples)
        wells.append(w)
    return wells


@servant(omero.api.IContainer, "IContainer")
class ContainerService(StandInServant, omero.api.IContainer):
    """``getImages`` as BlitzGateway's ImageWrapper uses it to load an image's pixels:
    distinct images with their pixels and pixel types."""

    def getImages(self, rootType, rootIds, options, current=None):
        if rootType != "Image":
            raise omero.ApiUsageException(message=f"the OMERO stand-in does not model getImages({rootType!r})")
        store = self.server.store
        group = ctx_group(current)
        images = []
        for iid in dict.fromkeys(rootIds):
            image = store.get("Image", iid)
            if image is None or not store.visible(image, self.session, group):
                continue
            out = shell(image)
            pixels = []
            for px in store.children("Pixels", "image", iid):
                p = shell(px)
                p.setImage(ref(image))
                p.setPixelsType(copy.copy(px.getPixelsType()))
                pixels.append(p)
            fill(out, "_pixelsSeq", pixels)
            images.append(out)
        return images


__all__ = ["PLATE_ACQUISITIONS", "PLATE_BY_IDS", "WELLS_OF_PLATE", "ContainerService", "answer"]
