"""The stand-in's OMERO services, as Ice servants over :class:`~.store.Store`.

Each class implements, under the same names and arguments, the operations of one
OMERO interface that the adapter (and the omero-py code above it) calls. Queries are
answered only for the HQL texts in :mod:`openhcs_omero_lib.omero.queries`; any other
text raises ``omero.ApiUsageException``, so an adapter change that the stand-in does
not model fails loudly instead of passing by accident.
"""

from __future__ import annotations

import copy
import uuid as uuidlib
from typing import Any

import Glacier2
import Ice
import numpy as np
import omero
import omero.api
import omero.cmd
import omero.grid
import omero.model
import omero.sys
from omero.rtypes import rlong, rstring, unwrap

from openhcs_omero_lib.omero import queries as Q
from openhcs_omero_lib.testing import annotation_reads, blitz, file_queries, image_service, repository, rois
from openhcs_omero_lib.testing._servant import StandInServant, servant
from openhcs_omero_lib.testing.store import Session, class_name
from openhcs_omero_lib.testing.wire import column, ctx_group, fill, param, ref, shell

_KINDS = ("Plate", "Well", "Image", "Screen", "Dataset", "Project", "FileAnnotation")


# ---- query -------------------------------------------------------------------------------

@servant(omero.api.IQuery, "IQuery")
class QueryService(StandInServant, omero.api.IQuery):
    def _visible(self, obj, current) -> bool:
        return obj is not None and self.server.store.visible(obj, self.session, ctx_group(current))

    def _plate_fields(self, pid: int, current) -> list[list[Any]]:
        store = self.server.store
        plate = store.get("Plate", pid)
        if not self._visible(plate, current):
            return []
        rows = []
        for well in store.children("Well", "plate", pid):
            wid = well.getId().getValue()
            position = [rlong(wid), copy.copy(well.getRow()), copy.copy(well.getColumn())]
            samples = store.children("WellSample", "well", wid)
            if not samples:
                rows.append(position + [None] * 6)
            for ws in samples:
                image_id = ws.getImage().getId().getValue()
                pixels = store.children("Pixels", "image", image_id)
                run = store.resolve(ws.getPlateAcquisition())
                rows.append(position + [rlong(ws.getId().getValue()), rlong(image_id),
                                        rlong(pixels[0].getId().getValue()) if pixels else None,
                                        omero.rtypes.rint(store.list_index[ws.getId().getValue()]),
                                        rlong(run.getId().getValue()) if run is not None else None,
                                        copy.copy(run.getName()) if run is not None else None])
        # HQL's "order by w.row, w.column, index(ws)": a field's index, not its ID
        rows.sort(key=lambda r: (r[1].getValue(), r[2].getValue(), r[6].getValue() if r[6] is not None else -1))
        return rows

    def _plate_image_kinds(self, pid: int, current) -> list[list[Any]]:
        """Inner joins from the plate's wells to its pixels, each object filtered by
        what the caller may read (as the server's security filter does), grouped by
        the pixels' dimensions and type; HQL gives the groups in no set order."""
        store = self.server.store
        groups: dict[tuple, list[int]] = {}
        for well in store.children("Well", "plate", pid):
            if not self._visible(well, current):
                continue
            for ws in store.children("WellSample", "well", well.getId().getValue()):
                image = store.resolve(ws.getImage())
                if not self._visible(ws, current) or not self._visible(image, current):
                    continue
                for px in store.children("Pixels", "image", image.getId().getValue()):
                    if self._visible(px, current):
                        key = tuple(unwrap(v) for v in (px.getSizeX(), px.getSizeY(), px.getSizeC(), px.getSizeZ(),
                                                         px.getSizeT(), px.getPixelsType().getValue()))
                        groups.setdefault(key, []).append(image.getId().getValue())
        return [[omero.rtypes.rint(x), omero.rtypes.rint(y), omero.rtypes.rint(c), omero.rtypes.rint(z),
                 omero.rtypes.rint(t), rstring(ptype), rlong(len(ids)), rlong(min(ids))]
                for (x, y, c, z, t, ptype), ids in sorted(groups.items(), key=lambda g: len(g[1]))]

    def _pixels_channels(self, pixels_id: int, current) -> list[Any]:
        store = self.server.store
        px = store.get("Pixels", pixels_id)
        if not self._visible(px, current):
            return []
        p = shell(px)
        p.setPixelsType(copy.copy(px.getPixelsType()))
        channels = []
        for ch in store.children("Channel", "pixels", pixels_id):  # kept in index order
            c = shell(ch)
            c.setPixels(ref(px))
            c.setLogicalChannel(copy.copy(store.get("LogicalChannel", ch.getLogicalChannel().getId().getValue())))
            channels.append(c)
        fill(p, "_channelsSeq", channels)
        return [p]

    def _annotation_links(self, kind: str, ids: list[int], ns: str, like: bool, current) -> list[Any]:
        store = self.server.store
        wanted = set(ids)
        found = []
        for link in store.all(f"{kind}AnnotationLink"):
            if link.getParent().getId().getValue() not in wanted or not self._visible(link, current):
                continue
            ann = store.resolve(link.getChild())
            ann_ns = ann.getNs().getValue() if ann is not None and ann.getNs() else ""
            if ann is None or not (ann_ns.startswith(ns.rstrip("%")) if like else ann_ns == ns):
                continue
            out = shell(link)
            out.setParent(ref(link.getParent()))
            child = shell(ann)
            if isinstance(ann, omero.model.FileAnnotationI) and ann.getFile() is not None:
                child.setFile(ref(ann.getFile()))
            out.setChild(child)
            found.append(out)
        return found

    def _file_annotation(self, aid: int, current) -> list[Any]:
        store = self.server.store
        ann = store.get("FileAnnotation", aid)
        if not self._visible(ann, current):
            return []
        out = shell(ann)
        out.setFile(copy.copy(store.get("OriginalFile", ann.getFile().getId().getValue())))
        return [out]

    def _pipeline_upload(self, ns: str, description: str, owner: int, current) -> list[Any]:
        found = []
        for ann in self.server.store.all("FileAnnotation"):
            if (self._visible(ann, current) and ann.getNs() and ann.getNs().getValue() == ns
                    and ann.getDescription() and ann.getDescription().getValue() == description
                    and self.server.store.owner_of(ann) == owner):
                found += self._file_annotation(ann.getId().getValue(), current)
        return found

    def _answer(self, query: str, params, current) -> list[Any]:
        text = " ".join(query.split())
        if text == Q.PIXELS_CHANNELS:
            return self._pixels_channels(param(params, "id"), current)
        if text == Q.FILE_ANNOTATION:
            return self._file_annotation(param(params, "id"), current)
        if text == Q.PLATE_PERMISSIONS:
            plate = self.server.store.get("Plate", param(params, "id"))
            return [shell(plate)] if self._visible(plate, current) else []
        if text == Q.PIPELINE_UPLOAD:
            return self._pipeline_upload(param(params, "ns"), param(params, "description"),
                                         param(params, "owner"), current)
        for kind in ("Plate", "Well", "Image"):
            if text == Q.ANNOTATION_LINKS.format(kind=kind):
                return self._annotation_links(kind, param(params, "ids"), param(params, "ns"), False, current)
            if text == Q.ANNOTATION_LINKS_NS_PREFIX.format(kind=kind):
                return self._annotation_links(kind, param(params, "ids"), param(params, "ns"), True, current)
        found = blitz.answer(self, text, params, current)  # a script's BlitzGateway plate walk
        if found is not None:
            return found
        # plates made through the API; listAnnotations; the Python API's files and results
        for model in (image_service, annotation_reads, file_queries):
            found = model.answer(self, text, params, current)
            if found is not None:
                return found
        raise omero.ApiUsageException(message=f"the OMERO stand-in does not model this query: {text}")

    def _project(self, query: str, params, current) -> list[list[Any]]:
        text = " ".join(query.split())
        store = self.server.store
        if text == Q.PLATE_FINGERPRINT:
            pid = param(params, "id")
            plate = store.get("Plate", pid)
            if not self._visible(plate, current):
                return []
            samples = [ws for w in store.children("Well", "plate", pid)
                       for ws in store.children("WellSample", "well", w.getId().getValue())]
            events = [ws.getDetails().getUpdateEvent().getId().getValue() for ws in samples]
            runs = [run for ws in samples if (run := store.resolve(ws.getPlateAcquisition())) is not None]
            run_events = [run.getDetails().getUpdateEvent().getId().getValue() for run in runs]
            return [[rlong(pid), rlong(store.group_of(plate)),
                     rlong(plate.getDetails().getUpdateEvent().getId().getValue()),
                     rlong(len(samples)), rlong(max(events)) if events else None,
                     plate.getName(), plate.getRows(), plate.getColumns(),
                     rlong(sum(store.list_index[ws.getId().getValue()] for ws in samples)) if samples else None,
                     rlong(max(run_events)) if run_events else None]]
        if text == Q.PLATE_FIELDS:
            return self._plate_fields(param(params, "id"), current)
        if text == Q.PLATE_IMAGE_KINDS:
            return self._plate_image_kinds(param(params, "id"), current)
        if text == Q.PLATE_LIST:
            rows = []
            for plate in sorted(store.all("Plate"), key=lambda p: p.getId().getValue()):
                if not self._visible(plate, current):
                    continue
                pid = plate.getId().getValue()
                wells = store.children("Well", "plate", pid)
                samples = [ws for w in wells for ws in store.children("WellSample", "well", w.getId().getValue())]
                sizes = [px.getSizeC().getValue() for ws in samples
                         for px in store.children("Pixels", "image", ws.getImage().getId().getValue())]
                owner = next(u for u in store.users.values() if u.id == store.owner_of(plate))
                rows.append([rlong(pid), plate.getName(), rlong(len(wells)), rlong(len(samples)),
                             omero.rtypes.rint(max(sizes)) if sizes else None, rstring(owner.name),
                             rstring(store.groups[store.group_of(plate)].name)])
            return rows
        if text == Q.SCREEN_PLATES:
            sid = param(params, "id")
            screen = store.get("Screen", sid)
            if not self._visible(screen, current):
                return []
            links = sorted(store.children("ScreenPlateLink", "parent", sid),
                           key=lambda link: link.getChild().getId().getValue())
            return [[rlong(link.getChild().getId().getValue())] for link in links]
        for kind in _KINDS:
            if text == Q.OBJECT_EXISTS.format(kind=kind):
                obj = store.get(kind, param(params, "id"))
                return [[rlong(obj.getId().getValue())]] if self._visible(obj, current) else []
        found = rois.project(self, text, params, current)  # the bundle's ROIs on images
        if found is not None:
            return found
        found = repository.project(self, text, params, current)  # a plate's files in the managed repository
        if found is not None:
            return found
        raise omero.ApiUsageException(message=f"the OMERO stand-in does not model this query: {text}")

    def findAllByQuery(self, query, params, current=None):
        return self._answer(query, params, current)

    def findByQuery(self, query, params, current=None):
        found = self._answer(query, params, current)
        if len(found) > 1:
            raise omero.ValidationException(message="findByQuery: more than one result")
        return found[0] if found else None

    def projection(self, query, params, current=None):
        return self._project(query, params, current)


# ---- update ------------------------------------------------------------------------------

_LINK_KINDS = {"PlateAnnotationLink", "WellAnnotationLink", "ImageAnnotationLink", "ScreenAnnotationLink"}
_ANNOTATION_KINDS = {"FileAnnotation", "MapAnnotation", "CommentAnnotation", "TagAnnotation"}


@servant(omero.api.IUpdate, "IUpdate", void={"saveObject", "saveArray", "deleteObject"})
class UpdateService(StandInServant, omero.api.IUpdate):
    def _write_group(self, current) -> int:
        group = ctx_group(current)
        if group == -1:
            raise omero.SecurityViolation(message="Cannot write with omero.group=-1: choose a group")
        return self.session.group if group is None else group

    def _save(self, obj, group: int) -> Any:
        modelled = image_service.save(self, obj, group)  # plates and images made through the API
        if modelled is not None:
            return modelled
        modelled = rois.save(self, obj, group)  # ROIs with their shapes
        if modelled is not None:
            return modelled
        store = self.server.store
        kind = class_name(obj)
        if obj.getId() is not None:
            existing = store.get(kind, obj.getId().getValue())
            if existing is None:
                raise omero.ValidationException(message=f"{kind}:{obj.getId().getValue()} does not exist")
            if not obj.isLoaded():
                return existing
            raise omero.ApiUsageException(message=f"the OMERO stand-in does not model updating {kind}")
        if kind in _LINK_KINDS:
            parent = store.resolve(obj.getParent())
            if parent is None or not store.visible(parent, self.session, group):
                raise omero.SecurityViolation(
                    message=f"{class_name(obj.getParent())}:{obj.getParent().getId().getValue()} "
                            f"is not in group {group} or not readable")
            if not store.may_annotate(parent, self.session):
                raise omero.SecurityViolation(
                    message=f"user {self.session.user.name} may not annotate "
                            f"{class_name(parent)}:{parent.getId().getValue()}")
            child = self._save(obj.getChild(), group)
            if store.group_of(child) != group:
                raise omero.SecurityViolation(message="cannot link objects of different groups")
            new = copy.copy(obj)
            new._details = omero.model.DetailsI()
            new.setParent(ref(parent))
            new.setChild(ref(child))
            return store.add(new, self.session.user, group)
        if kind in _ANNOTATION_KINDS or kind == "OriginalFile":
            new = copy.copy(obj)
            new._details = omero.model.DetailsI()
            if kind == "FileAnnotation":
                file = self._save(obj.getFile(), group)
                if store.group_of(file) != group:  # omero-server OmeroInterceptor.evaluateLinkages
                    raise omero.SecurityViolation(message="cannot link objects of different groups")
                new.setFile(ref(file))
            stored = store.add(new, self.session.user, group)
            if kind == "OriginalFile":
                store.files[stored.getId().getValue()] = bytearray()
            return stored
        raise omero.ApiUsageException(message=f"the OMERO stand-in does not model saving a new {kind}")

    # The answer holds what was saved, but an object the graph only pointed at comes back
    # unloaded: omero-server's MergeEventListener (earlyExit) replaces an unloaded
    # reference by a Hibernate proxy, and ProxyCleanupFilter sends uninitialised proxies
    # as unloaded objects; so a new FileAnnotation's file and a new link's parent come
    # back by ID alone (a proxy the save happened to initialise would come back loaded:
    # never counted on here). New objects nested in the graph come back unloaded here
    # too, stricter than the server, which returns them loaded.
    def saveAndReturnObject(self, obj, current=None):
        return shell(self._save(obj, self._write_group(current)))

    def saveObject(self, obj, current=None):
        self._save(obj, self._write_group(current))

    def saveAndReturnArray(self, graph, current=None):
        group = self._write_group(current)
        return [shell(o) for o in self._save_all(graph, group)]

    def saveArray(self, graph, current=None):
        group = self._write_group(current)
        self._save_all(graph, group)

    def _save_all(self, graph, group: int) -> list[Any]:
        """One transaction, as on the server (omero-server UpdateImpl.saveArray runs
        in one Hibernate transaction): an object that cannot be saved undoes the
        ones saved before it."""
        store = self.server.store
        saved, made = [], []
        try:
            for o in graph:
                new = o.getId() is None
                saved.append(self._save(o, group))
                if new:
                    made.append(saved[-1])
        except BaseException:
            for obj in made:
                oid = obj.getId().getValue()
                store.remove(class_name(obj), oid)
                store.files.pop(oid, None)
            raise
        return saved

    def saveAndReturnIds(self, graph, current=None):
        group = self._write_group(current)
        return [self._save(o, group).getId().getValue() for o in graph]

    def deleteObject(self, row, current=None):
        self.server.delete_graph({class_name(row): [row.getId().getValue()]}, self.session)


# ---- files and pixels --------------------------------------------------------------------

@servant(omero.api.RawFileStore, "RawFileStore", void={"setFileId", "write", "close"})
class RawFileStoreService(StandInServant, omero.api.RawFileStore):
    file_id: int | None = None

    def _file(self) -> bytearray:
        if self.file_id is None:
            raise omero.ApiUsageException(message="RawFileStore: setFileId() first")
        return self.server.store.files[self.file_id]

    def setFileId(self, fileId, current=None):
        ofile = self.server.store.get("OriginalFile", fileId)
        if ofile is None or not self.server.store.visible(ofile, self.session, ctx_group(current)):
            raise omero.SecurityViolation(message=f"OriginalFile:{fileId} is not readable")
        self.file_id = fileId

    def getFileId(self, current=None):
        return self.file_id

    def read(self, position, length, current=None):
        return bytes(self._file()[position:position + length])

    def size(self, current=None):
        return len(self._file())

    def exists(self, current=None):
        return self.file_id is not None and self.file_id in self.server.store.files

    def truncate(self, length, current=None):
        data = self._file()
        if length >= len(data):
            return False
        del data[length:]
        return True

    def write(self, buf, position, length, current=None):
        data = self._file()
        if len(data) < position:
            data.extend(b"\0" * (position - len(data)))
        data[position:position + length] = buf[:length]

    def save(self, current=None):
        store = self.server.store
        size = len(self._file())
        ofile = store.get("OriginalFile", self.file_id)
        ofile.setSize(rlong(size))
        store.touch(ofile)
        return shell(ofile)

    def close(self, current=None):
        self.server.remove_servant(current)


@servant(omero.api.RawPixelsStore, "RawPixelsStore", void={"setPixelsId", "setPlane", "close"})
class RawPixelsStoreService(StandInServant, omero.api.RawPixelsStore):
    one_call_at_a_time = True
    pixels_id: int | None = None

    def _pixels(self):
        if self.pixels_id is None:
            raise omero.ApiUsageException(message="RawPixelsStore: setPixelsId() first")
        return self.server.store.get("Pixels", self.pixels_id)

    def _plane(self, z: int, c: int, t: int) -> np.ndarray:
        px = self._pixels()
        limits = (px.getSizeZ().getValue(), px.getSizeC().getValue(), px.getSizeT().getValue())
        if not all(0 <= v < n for v, n in zip((z, c, t), limits)):
            raise omero.ApiUsageException(message=f"plane z={z} c={c} t={t} outside {limits}")
        plane = self.server.store.pixels_data[self.pixels_id](z, c, t)
        return plane.astype(plane.dtype.newbyteorder(">"))  # OMERO sends big-endian

    def setPixelsId(self, pixelsId, bypassOriginalFile, current=None):
        px = self.server.store.get("Pixels", pixelsId)
        if px is None or not self.server.store.visible(px, self.session, ctx_group(current)):
            raise omero.SecurityViolation(message=f"Pixels:{pixelsId} is not readable")
        if pixelsId in self.server.pyramids_pending:
            # omero-romio PixelsService.handleMissingPyramid via SimpleBackOff; the
            # store forgets its image (omero-server RawPixelsBean.setPixelsId), so
            # that a later call can try again.
            self.pixels_id = None
            raise omero.MissingPyramidException(message=f"Missing pyramid:/OMERO/Pixels/{pixelsId}_pyramid",
                                                backOff=1000, pixelsID=pixelsId)
        self.pixels_id = pixelsId

    def getPixelsId(self, current=None):
        return self.pixels_id

    def setPlane(self, buf, z, c, t, current=None):
        image_service.set_plane(self, buf, z, c, t)

    def save(self, current=None):
        return image_service.save_pixels(self)

    def getPlane(self, z, c, t, current=None):
        return self._plane(z, c, t).tobytes()

    def getStack(self, c, t, current=None):
        px = self._pixels()
        return b"".join(self._plane(z, c, t).tobytes() for z in range(px.getSizeZ().getValue()))

    def getTile(self, z, c, t, x, y, w, h, current=None):
        return np.ascontiguousarray(self._plane(z, c, t)[y:y + h, x:x + w]).tobytes()

    def getPlaneSize(self, current=None):
        px = self._pixels()
        return px.getSizeX().getValue() * px.getSizeY().getValue() * self.getByteWidth(current)

    def getByteWidth(self, current=None):
        return np.dtype(self._pixels().getPixelsType().getValue().getValue()).itemsize

    def isSigned(self, current=None):
        return np.dtype(self._pixels().getPixelsType().getValue().getValue()).kind == "i"

    def isFloat(self, current=None):
        return np.dtype(self._pixels().getPixelsType().getValue().getValue()).kind == "f"

    def close(self, current=None):
        self.server.remove_servant(current)


# ---- tables ------------------------------------------------------------------------------

@servant(omero.grid.Table, "Table")
class TableService(StandInServant, omero.grid.Table):
    file_id: int = 0

    def _table(self) -> dict[str, Any]:
        return self.server.store.tables[self.file_id]

    def getOriginalFile(self, current=None):
        return shell(self.server.store.get("OriginalFile", self.file_id))

    def initialize(self, cols, current=None):
        table = self._table()
        if table["headers"] is not None:
            raise omero.ApiUsageException(message="table already initialized")
        if len(cols) > 512:
            raise omero.ApiUsageException(message="at most 512 columns")
        table["headers"] = [column(c, []) for c in cols]
        table["columns"] = [[] for _ in cols]

    def addData(self, cols, current=None):
        table = self._table()
        if table["headers"] is None:
            raise omero.ApiUsageException(message="initialize() first")
        if [c.name for c in cols] != [h.name for h in table["headers"]]:
            raise omero.ApiUsageException(message="columns do not match the table's")
        lengths = {len(c.values) for c in cols}
        if len(lengths) > 1:
            raise omero.ApiUsageException(message="columns of unequal length")
        for store_col, col in zip(table["columns"], cols):
            store_col.extend(col.values)
        self.server.store.touch(self.server.store.get("OriginalFile", self.file_id))

    def getHeaders(self, current=None):
        return self._table()["headers"]

    def getNumberOfRows(self, current=None):
        cols = self._table()["columns"]
        return len(cols[0]) if cols else 0

    def read(self, colNumbers, start, stop, current=None):
        table = self._table()
        out = []
        for n in colNumbers:
            out.append(column(table["headers"][n], table["columns"][n][start:stop]))
        return omero.grid.Data(columns=out, rowNumbers=list(range(start, min(stop, self.getNumberOfRows(current)))),
                               lastModification=0)

    def getWhereList(self, condition, variables, start, stop, step, current=None):
        """Only ``(<column>==<whole number>)``, the query OMERO.web sends for a well or
        an image (omero-web webgateway/views.py, perform_table_query: ``Well-7`` ->
        ``(Well==7)``). As omero-py's tables (hdfstorageV2.getWhereList) answer, a
        column the table lacks or a string column compared with a number is a bad
        condition (ApiUsageException); anything else is not modelled."""
        import re

        match = re.fullmatch(r"\((\w+)==(-?\d+)\)", " ".join(condition.split()).replace(" ", ""))
        if match is None or variables:
            raise omero.ApiUsageException(message=f"the OMERO stand-in does not model the condition {condition!r}")
        table = self._table()
        names = [h.name for h in table["headers"]]
        name, value = match.group(1), int(match.group(2))
        if name not in names or isinstance(table["headers"][names.index(name)], omero.grid.StringColumn):
            raise omero.ApiUsageException(message=f"Bad condition: {condition}, {variables}")
        values = table["columns"][names.index(name)]
        stop = len(values) if not stop else min(stop, len(values))
        return [i for i in range(start, stop, step or 1) if values[i] == value]

    def slice(self, colNumbers, rowNumbers, current=None):
        table = self._table()
        width, rows = len(table["headers"]), self.getNumberOfRows(current)
        cols = list(colNumbers) or list(range(width))
        wanted = list(rowNumbers) or list(range(rows))
        if any(not 0 <= c < width for c in cols) or any(not 0 <= r < rows for r in wanted):
            raise omero.ApiUsageException(message=f"slice out of range: columns {cols}, rows {wanted}")
        out = [column(table["headers"][n], [table["columns"][n][r] for r in wanted]) for n in cols]
        return omero.grid.Data(columns=out, rowNumbers=wanted, lastModification=0)

    def close(self, current=None):
        self.server.remove_servant(current)


@servant(omero.grid.SharedResources, "SharedResources")
class SharedResourcesService(StandInServant, omero.grid.SharedResources):
    def repositories(self, current=None):
        return repository.repository_map(self)

    def areTablesEnabled(self, current=None):
        return self.server.tables_enabled

    def newTable(self, repoId, path, current=None):
        store = self.server.store
        group = ctx_group(current)
        if group == -1:
            raise omero.SecurityViolation(message="Cannot write with omero.group=-1: choose a group")
        ofile = omero.model.OriginalFileI()
        ofile.setName(rstring(path.rsplit("/", 1)[-1]))
        ofile.setPath(rstring(path))
        ofile.setMimetype(rstring("OMERO.tables"))
        ofile = store.add(ofile, self.session.user, self.session.group if group is None else group)
        store.files[ofile.getId().getValue()] = bytearray()
        if not self.server.tables_enabled:
            # omero-blitz SharedResourcesI.newTable saves the file, then finds no
            # Tables service to open it, and TableCloserI refuses the missing table;
            # the file stays behind.
            raise omero.InternalException(message="null table as argument")
        store.tables[ofile.getId().getValue()] = {"headers": None, "columns": None}
        return self.server.add_servant(TableService, self.session, omero.grid.TablePrx,
                                       file_id=ofile.getId().getValue())

    def openTable(self, file, current=None):
        fid = file.getId().getValue()
        # omero-py tables.py TablesI.getTable: the repository looks the file up as the
        # caller ("will throw an exception if not allowed")
        ofile = self.server.store.get("OriginalFile", fid)
        if ofile is None or not self.server.store.visible(ofile, self.session, ctx_group(current)):
            raise omero.SecurityViolation(message=f"OriginalFile:{fid} is not readable")
        if fid not in self.server.store.tables:
            raise omero.ApiUsageException(message=f"OriginalFile:{fid} is not a table")
        return self.server.add_servant(TableService, self.session, omero.grid.TablePrx, file_id=fid)


# ---- sessions, admin, commands -------------------------------------------------------------

@servant(omero.api.ISession, "ISession", void={"setInput", "setOutput"})
class SessionService(StandInServant, omero.api.ISession):
    def _session(self, uuid: str) -> Session:
        session = self.server.store.sessions.get(uuid)
        if session is None or session.closed:
            raise omero.RemovedSessionException(message=f"session {uuid[:4]}... is closed")
        return session

    def getSession(self, sessionUuid, current=None):
        s = self._session(sessionUuid)
        out = omero.model.SessionI()
        out.setUuid(rstring(s.uuid))
        return out

    def closeSession(self, sess, current=None):
        session = self._session(sess.getUuid().getValue())
        with self.server._lock:
            if not session.closed:
                session.closed = True
                self.server.calls["sessions.closed"] += 1
        self.server.session_ended(session)
        return 0

    def getReferenceCount(self, sessionUuid, current=None):
        return self._session(sessionUuid).connections

    def getInput(self, sess, key, current=None):
        return self._session(sess).inputs.get(key)

    def getOutput(self, sess, key, current=None):
        return self._session(sess).outputs.get(key)

    def setInput(self, sess, key, value, current=None):
        self._session(sess).inputs[key] = value

    def setOutput(self, sess, key, value, current=None):
        self._session(sess).outputs[key] = value

    def getInputKeys(self, sess, current=None):
        return list(self._session(sess).inputs)

    def getOutputKeys(self, sess, current=None):
        return list(self._session(sess).outputs)

    def getInputs(self, sess, current=None):
        return dict(self._session(sess).inputs)

    def getOutputs(self, sess, current=None):
        return dict(self._session(sess).outputs)


@servant(omero.api.IAdmin, "IAdmin")
class AdminService(StandInServant, omero.api.IAdmin):
    def getEventContext(self, current=None):
        user, store = self.session.user, self.server.store
        group = store.groups[self.session.group]
        return omero.sys.EventContext(
            shareId=-1, sessionId=1, sessionUuid=self.session.uuid, userId=user.id, userName=user.name,
            sudoerId=None, sudoerName=None, groupId=group.id, groupName=group.name, isAdmin=False,
            adminPrivileges=[], eventId=-1, eventType="User", memberOfGroups=list(user.groups),
            leaderOfGroups=[], groupPermissions=omero.model.PermissionsI(group.permissions))

    def getGroup(self, id, current=None):
        group = self.server.store.groups.get(id)
        if group is None:
            raise omero.ApiUsageException(message=f"no group {id}")
        out = omero.model.ExperimenterGroupI(group.id, True)
        out.setName(rstring(group.name))
        return out

    def lookupGroup(self, name, current=None):
        for group in self.server.store.groups.values():
            if group.name == name:
                return self.getGroup(group.id, current=current)
        raise omero.ApiUsageException(message=f"No such group: {name}")

    def getExperimenter(self, id, current=None):
        for user in self.server.store.users.values():
            if user.id == id:
                out = omero.model.ExperimenterI(user.id, True)
                out.setOmeName(rstring(user.name))
                return out
        raise omero.ApiUsageException(message=f"no experimenter {id}")


@servant(omero.cmd.Handle, "Handle")
class HandleService(StandInServant, omero.cmd.Handle):
    request: Any = None
    response: Any = None

    def getRequest(self, current=None):
        return self.request

    def getResponse(self, current=None):
        return self.response

    def getStatus(self, current=None):
        return omero.cmd.Status(steps=1, currentStep=1, flags=[])

    def cancel(self, current=None):
        return False

    def addCallback(self, cb, current=None):
        pass

    def removeCallback(self, cb, current=None):
        pass

    def close(self, current=None):
        self.server.remove_servant(current)


# ---- the session's entry point ---------------------------------------------------------------

@servant(omero.api.ServiceFactory, "ServiceFactory",
         void={"setCallback", "closeOnDestroy", "detachOnDestroy", "destroy"})
class ServiceFactoryService(StandInServant, omero.api.ServiceFactory):
    detached = False
    closed = False

    def _stateless(self, cls, prx_type):
        cache = self.__dict__.setdefault("_services", {})
        if cls not in cache:
            cache[cls] = self.server.add_servant(cls, self.session, prx_type)
        return cache[cls]

    def getQueryService(self, current=None):
        return self._stateless(QueryService, omero.api.IQueryPrx)

    def getUpdateService(self, current=None):
        return self._stateless(UpdateService, omero.api.IUpdatePrx)

    def getSessionService(self, current=None):
        return self._stateless(SessionService, omero.api.ISessionPrx)

    def getAdminService(self, current=None):
        return self._stateless(AdminService, omero.api.IAdminPrx)

    def getContainerService(self, current=None):
        return self._stateless(blitz.ContainerService, omero.api.IContainerPrx)

    def sharedResources(self, current=None):
        return self._stateless(SharedResourcesService, omero.grid.SharedResourcesPrx)

    def createRawFileStore(self, current=None):
        return self.server.add_servant(RawFileStoreService, self.session, omero.api.RawFileStorePrx)

    def getRoiService(self, current=None):
        return self._stateless(rois.RoiService, omero.api.IRoiPrx)

    def getPixelsService(self, current=None):
        return self._stateless(image_service.PixelsService, omero.api.IPixelsPrx)

    def createRawPixelsStore(self, current=None):
        return self.server.add_servant(RawPixelsStoreService, self.session, omero.api.RawPixelsStorePrx)

    def getScriptService(self, current=None):
        from openhcs_omero_lib.testing.script_service import ScriptService

        return self._stateless(ScriptService, omero.api.IScriptPrx)

    def createJobHandle(self, current=None):
        from openhcs_omero_lib.testing.script_service import JobHandleService

        return self.server.add_servant(JobHandleService, self.session, omero.api.JobHandlePrx)

    def submit(self, req, current=None):
        handle = self.server.add_servant(HandleService, self.session, omero.cmd.HandlePrx)
        servant_obj = self.server.servant_of(handle)
        servant_obj.request = req
        if isinstance(req, omero.cmd.Delete2):
            try:
                targets = {k: list(v) for k, v in req.targetObjects.items()}
                # with what the server deletes along with plates and images
                targets = image_service.delete_targets(self.server.store, targets)
                targets = rois.delete_targets(self.server.store, targets)  # images' ROIs, ROIs' shapes
                repository.check_fileset_deletes(self.server.store, targets)  # a fileset's images go together
                deleted = self.server.delete_graph(targets, self.session)
                servant_obj.response = omero.cmd.Delete2Response(deletedObjects=deleted)
            except omero.ServerError as exc:
                servant_obj.response = omero.cmd.ERR(category="graph", name=type(exc).__name__,
                                                     parameters={"message": exc.message or ""})
        else:
            servant_obj.response = omero.cmd.ERR(category="stand-in", name="unsupported",
                                                 parameters={"request": type(req).__name__})
        return handle

    def keepAlive(self, proxy, current=None):
        return True

    def keepAllAlive(self, proxies, current=None):
        return []

    def setCallback(self, callback, current=None):
        pass

    def closeOnDestroy(self, current=None):
        self.detached = False

    def detachOnDestroy(self, current=None):
        self.detached = True

    def destroy(self, current=None):
        self.server.end_connection(self)


class RouterServant(Glacier2.Router):
    """The Glacier2 router clients log in through. Requests that clients route
    through it arrive straight at the stand-in's adapter, which hosts every servant."""

    def __init__(self, server):
        self.server = server

    def getClientProxy(self, current=None):
        return None  # clients send requests to the router's own endpoints

    def getServerProxy(self, current=None):
        return self.server.adapter.createProxy(Ice.Identity("server", "OMERO.Glacier2"))

    def addProxies(self, proxies, current=None):
        return []

    def getCategoryForClient(self, current=None):
        return "client-" + str(uuidlib.uuid4())

    def createSession_async(self, _cb, userId, password, current=None):
        try:
            _cb.ice_response(self.server.create_session(userId, password, current))
        except Ice.Exception as exc:
            _cb.ice_exception(exc)

    def createSessionFromSecureConnection_async(self, _cb, current=None):
        _cb.ice_exception(Glacier2.PermissionDeniedException(reason="no secure connections here"))

    def refreshSession_async(self, _cb, current=None):
        _cb.ice_response()

    def destroySession(self, current=None):
        self.server.destroy_connection(current.con)

    def getSessionTimeout(self, current=None):
        return 600

    def getACMTimeout(self, current=None):
        return 0

