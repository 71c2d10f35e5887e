"""The stand-in's side of creating a plate through the API (:mod:`.upload`).

Modelled, as a server does them, and nothing more:

- ``IPixels.createImage``: an Image with one Pixels (dimension order XYZCT, SHA1
  "Pending...") and a Channel with an empty LogicalChannel per entry of the channel
  list (whose values the server ignores), in the call's group;
- the pixel type lookup omero-py sends (:data:`.upload.PIXELS_TYPE`);
- ``RawPixelsStore.setPlane`` / ``save`` on such an image, by its owner, with a buffer
  of exactly one big-endian plane; planes never written read as zeros;
- ``IUpdate`` saving a new Plate with new Wells and WellSamples that point at
  existing images of the same group (each sample at its position in its well's
  list), and new PlateAcquisitions (runs) of that plate that samples point at, and
  changing the name and emission wavelength of a LogicalChannel or the physical
  pixel size of a Pixels;
- ``Delete2`` of a Plate taking its Wells, WellSamples and PlateAcquisitions with
  it, of an Image its Pixels, Channels, LogicalChannels and WellSamples (the well's
  other samples keep their index: a gap), and of any of them the annotation links
  they are the parent of (the annotations stay).

Anything else about these objects fails loudly, as the rest of the stand-in does.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import omero
import omero.api
import omero.model
from omero.rtypes import rint, rlong, rstring, unwrap

from openhcs_omero_lib.testing._servant import StandInServant, servant
from openhcs_omero_lib.testing.store import class_name
from openhcs_omero_lib.testing.upload import PIXELS_TYPE
from openhcs_omero_lib.testing.wire import ctx_group, param, shell

# OMERO's pixel types, with the numpy type of their values.
PIXEL_TYPES = {"bit": "u1", "int8": "i1", "uint8": "u1", "int16": "i2", "uint16": "u2", "int32": "i4",
               "uint32": "u4", "float": "f4", "double": "f8", "complex": "c8", "double-complex": "c16"}
_TYPE_IDS = {value: index for index, value in enumerate(PIXEL_TYPES, start=1)}
XYZCT = 1

# Fields an IUpdate may change on an existing object of these kinds.
_UPDATABLE = {"LogicalChannel": {"_name", "_emissionWave"},
              "Pixels": {"_physicalSizeX", "_physicalSizeY"}}



def pixels_type(value: str) -> Any:
    ptype = omero.model.PixelsTypeI(_TYPE_IDS[value], True)
    ptype.setValue(rstring(value))
    return ptype


def numpy_type(pixels: Any) -> np.dtype:
    return np.dtype(PIXEL_TYPES[pixels.getPixelsType().getValue().getValue()])


class WrittenPlanes:
    """Pixel data of an image created through the API: ``(z, c, t) -> plane``."""

    def __init__(self, shape: tuple[int, int], dtype: np.dtype):
        self.shape = shape
        self.dtype = dtype
        self.planes: dict[tuple[int, int, int], np.ndarray] = {}

    def __call__(self, z: int, c: int, t: int) -> np.ndarray:
        plane = self.planes.get((z, c, t))
        return plane if plane is not None else np.zeros(self.shape, self.dtype)


# ---- queries ---------------------------------------------------------------------------------

def answer(query_service, text: str, params, current) -> list[Any] | None:
    """The pixel type lookup, or None when ``text`` is another query."""
    if text != " ".join(PIXELS_TYPE.split()):
        return None
    value = param(params, "value")
    return [pixels_type(value)] if value in PIXEL_TYPES else []


# ---- IPixels ---------------------------------------------------------------------------------

@servant(omero.api.IPixels, "IPixels")
class PixelsService(StandInServant, omero.api.IPixels):
    def createImage(self, sizeX, sizeY, sizeZ, sizeT, channelList, pixelsType, name, description, current=None):
        store, user = self.server.store, self.session.user
        group = ctx_group(current)
        if group == -1:
            raise omero.SecurityViolation(message="Cannot write with omero.group=-1: choose a group")
        group = self.session.group if group is None else group
        if not channelList:
            raise omero.ValidationException(message="Channel list must be filled.")
        if min(sizeX, sizeY, sizeZ, sizeT) < 1:
            raise omero.ValidationException(message=f"sizes must be positive: {sizeX, sizeY, sizeZ, sizeT}")
        value = _type_value(pixelsType)
        image = omero.model.ImageI()
        image.setName(rstring(name))
        image.setDescription(rstring(description))
        iid = store.add(image, user, group).getId().getValue()
        px = omero.model.PixelsI()
        px.setImage(omero.model.ImageI(iid, False))
        for setter, size in (("setSizeX", sizeX), ("setSizeY", sizeY), ("setSizeZ", sizeZ),
                             ("setSizeC", len(channelList)), ("setSizeT", sizeT)):
            getattr(px, setter)(rint(size))
        px.setPixelsType(pixels_type(value))
        order = omero.model.DimensionOrderI(XYZCT, True)
        order.setValue(rstring("XYZCT"))
        px.setDimensionOrder(order)
        px.setSha1(rstring("Pending..."))
        pid = store.add(px, user, group, {"image": iid}).getId().getValue()
        for _ in channelList:
            lc = store.add(omero.model.LogicalChannelI(), user, group)
            ch = omero.model.ChannelI()
            ch.setPixels(omero.model.PixelsI(pid, False))
            ch.setLogicalChannel(omero.model.LogicalChannelI(lc.getId().getValue(), False))
            store.add(ch, user, group, {"pixels": pid})
        store.pixels_data[pid] = WrittenPlanes((sizeY, sizeX), np.dtype(PIXEL_TYPES[value]))
        return rlong(iid)


def _type_value(ptype: Any) -> str:
    if ptype is None:
        raise omero.ValidationException(message="a Pixels needs a pixels type")
    if ptype.isLoaded() and ptype.getValue() is not None:
        value = ptype.getValue().getValue()
    else:
        value = next((v for v, i in _TYPE_IDS.items() if ptype.getId() is not None and i == ptype.getId().getValue()),
                     None)
    if value not in PIXEL_TYPES:
        raise omero.ValidationException(message=f"no pixels type {value!r}")
    return value


# ---- RawPixelsStore writes -------------------------------------------------------------------

def set_plane(raw_store, buf: bytes, z: int, c: int, t: int) -> None:
    store = raw_store.server.store
    px = raw_store._pixels()
    pid = px.getId().getValue()
    planes = store.pixels_data.get(pid)
    if not isinstance(planes, WrittenPlanes):
        raise omero.ApiUsageException(
            message=f"the OMERO stand-in models writing pixels only to images made with IPixels.createImage "
                    f"(Pixels:{pid} was imported)")
    if store.owner_of(px) != raw_store.session.user.id:
        raise omero.SecurityViolation(message=f"only the owner may write Pixels:{pid}")
    limits = (px.getSizeZ().getValue(), px.getSizeC().getValue(), px.getSizeT().getValue())
    if not all(0 <= v < n for v, n in zip((z, c, t), limits)):
        raise omero.ApiUsageException(message=f"plane z={z} c={c} t={t} outside {limits}")
    wire = planes.dtype.newbyteorder(">")
    if len(buf) != planes.shape[0] * planes.shape[1] * wire.itemsize:
        raise omero.ApiUsageException(
            message=f"buffer of {len(buf)} bytes for a plane of {planes.shape} {wire.name} values")
    planes.planes[(z, c, t)] = np.frombuffer(buf, dtype=wire).reshape(planes.shape).astype(planes.dtype)


def save_pixels(raw_store) -> Any:
    px = raw_store._pixels()
    raw_store.server.store.touch(px)
    return shell(px)


# ---- IUpdate ---------------------------------------------------------------------------------

def save(update_service, obj: Any, group: int) -> Any | None:
    """The stored object for a save this module models, or None for any other."""
    kind = class_name(obj)
    if obj.getId() is not None and obj.isLoaded() and kind in _UPDATABLE:
        return _update(update_service, kind, obj, group)
    if obj.getId() is None and kind == "Plate":
        return _new_plate(update_service, obj, group)
    return None


def _comparable(value: Any) -> Any:
    if isinstance(value, omero.RType):
        return unwrap(value)
    if isinstance(value, omero.model.IObject):
        return class_name(value), value.getId().getValue() if value.getId() is not None else None
    if hasattr(value, "getUnit"):  # a Length and the like
        return value.getValue(), str(value.getUnit())
    return value


def _fields(obj: Any) -> list[str]:
    return [a for a in vars(obj) if a not in ("_id", "_details", "_loaded", "_version")
            and not a.endswith(("Seq", "Loaded", "CountPerOwner"))]


def _check_writable(update_service, obj: Any, kind: str, group: int) -> None:
    store, session = update_service.server.store, update_service.session
    if not store.visible(obj, session, group):
        raise omero.SecurityViolation(message=f"{kind}:{obj.getId().getValue()} is not in group {group}")
    if store.owner_of(obj) != session.user.id and store.groups[store.group_of(obj)].permissions[2:4] != "rw":
        raise omero.SecurityViolation(message=f"may not change {kind}:{obj.getId().getValue()}")


def _update(update_service, kind: str, obj: Any, group: int) -> Any:
    store = update_service.server.store
    existing = store.get(kind, obj.getId().getValue())
    if existing is None:
        raise omero.ValidationException(message=f"{kind}:{obj.getId().getValue()} does not exist")
    _check_writable(update_service, existing, kind, group)
    changes = {}
    for attr in _fields(obj):
        sent = getattr(obj, attr)
        if attr in _UPDATABLE[kind]:
            changes[attr] = sent
        elif _comparable(sent) != _comparable(getattr(existing, attr, None)):
            raise omero.ApiUsageException(message=f"the OMERO stand-in does not model changing {kind}.{attr[1:]}")
    with store.lock:
        for attr, value in changes.items():
            setattr(existing, attr, value)
        store.touch(existing)
    return existing


def _only(obj: Any, kind: str, collections: set[str], references: set[str]) -> None:
    """Refuse a new object that carries more than the modelled collections and references."""
    for attr, value in vars(obj).items():
        if attr.endswith("Seq") and value and attr not in collections:
            raise omero.ApiUsageException(message=f"the OMERO stand-in does not model saving {kind}.{attr[1:-3]}")
        if isinstance(value, omero.model.IObject) and attr not in references:
            raise omero.ApiUsageException(message=f"the OMERO stand-in does not model saving {kind}.{attr[1:]}")


def _bare(obj: Any) -> Any:
    """A copy of a new object without its collections or the client's details."""
    new = copy.copy(obj)
    new._details = omero.model.DetailsI()
    for attr in list(vars(new)):
        if attr.endswith("Seq"):
            setattr(new, attr, [])
    return new


def _new_plate(update_service, plate: Any, group: int) -> Any:
    store, session = update_service.server.store, update_service.session
    _only(plate, "Plate", {"_wellsSeq", "_plateAcquisitionsSeq"}, set())
    acquisitions = plate.copyPlateAcquisitions()
    for acquisition in acquisitions:
        _only(acquisition, "PlateAcquisition", set(), {"_plate"})
        if acquisition.getId() is not None:
            raise omero.ApiUsageException(message="the OMERO stand-in models adding only new runs to a new plate")
        if acquisition.getPlate() is None:  # PlateAcquisition.plate is required (screen.ome.xml)
            raise omero.ValidationException(message="a PlateAcquisition needs its plate")
    wells = plate.copyWells()
    for well in wells:
        _only(well, "Well", {"_wellSamplesSeq"}, {"_plate"})
        if well.getId() is not None:
            raise omero.ApiUsageException(message="the OMERO stand-in models adding only new wells to a new plate")
        for sample in well.copyWellSamples():
            if sample is None:
                continue
            _only(sample, "WellSample", set(), {"_well", "_image", "_plateAcquisition"})
            run = sample.getPlateAcquisition()
            if run is not None and not any(run is a for a in acquisitions):
                raise omero.ApiUsageException(
                    message="the OMERO stand-in models well samples only of the new plate's own new runs")
            ref = sample.getImage()
            image = store.get("Image", ref.getId().getValue()) if ref is not None and ref.getId() else None
            if image is None:
                raise omero.ValidationException(message="a WellSample needs an existing image")
            if store.group_of(image) != group or not store.visible(image, session, group):
                raise omero.SecurityViolation(message=f"Image:{image.getId().getValue()} is not in group {group}")
    with store.lock:
        stored = store.add(_bare(plate), session.user, group)
        pid = stored.getId().getValue()
        runs = {}
        for acquisition in acquisitions:
            a = _bare(acquisition)
            a.setPlate(omero.model.PlateI(pid, False))
            runs[id(acquisition)] = store.add(a, session.user, group, {"plate": pid}).getId().getValue()
        for well in wells:
            w = _bare(well)
            w.setPlate(omero.model.PlateI(pid, False))
            wid = store.add(w, session.user, group, {"plate": pid}).getId().getValue()
            for index, sample in enumerate(well.copyWellSamples()):
                if sample is None:  # a gap in the list stays a gap
                    continue
                s = _bare(sample)
                s.setWell(omero.model.WellI(wid, False))
                s.setImage(omero.model.ImageI(sample.getImage().getId().getValue(), False))
                if sample.getPlateAcquisition() is not None:
                    s.setPlateAcquisition(omero.model.PlateAcquisitionI(runs[id(sample.getPlateAcquisition())], False))
                store.add(s, session.user, group, {"well": wid}, index=index)
    return stored


# ---- Delete2 ---------------------------------------------------------------------------------

def delete_targets(store, targets: dict[str, list[int]]) -> dict[str, list[int]]:
    """``targets`` with what the server deletes along with them (see the module docstring)."""
    out = {kind: list(ids) for kind, ids in targets.items()}

    def add(kind: str, objects: list[Any]) -> None:
        ids = out.setdefault(kind, [])
        ids.extend(i for i in (o.getId().getValue() for o in objects) if i not in ids)

    for pid in targets.get("Plate", []):
        wells = store.children("Well", "plate", pid)
        add("Well", wells)
        add("PlateAcquisition", store.children("PlateAcquisition", "plate", pid))
        add("WellSample", [ws for w in wells for ws in store.children("WellSample", "well", w.getId().getValue())])
    images = set(targets.get("Image", []))
    if images:
        add("WellSample", [ws for ws in store.all("WellSample") if ws.getImage().getId().getValue() in images])
    for iid in images:
        pixels = store.children("Pixels", "image", iid)
        add("Pixels", pixels)
        channels = [ch for px in pixels for ch in store.children("Channel", "pixels", px.getId().getValue())]
        add("Channel", channels)
        add("LogicalChannel", [lc for ch in channels if (lc := store.resolve(ch.getLogicalChannel())) is not None])
    for kind in ("Plate", "Well", "Image"):
        parents = set(out.get(kind, []))
        if parents:
            add(f"{kind}AnnotationLink", [link for link in store.all(f"{kind}AnnotationLink")
                                          if link.getParent().getId().getValue() in parents])
    return out


__all__ = [
    "PIXEL_TYPES",
    "PixelsService",
    "WrittenPlanes",
    "answer",
    "delete_targets",
    "pixels_type",
    "save",
    "save_pixels",
    "set_plane",
]
