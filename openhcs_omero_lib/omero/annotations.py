"""Small functions that each do one thing with annotations: upload, link, find,
delete, tables. Each takes a connection and the group to work in; batches are
saved in one call where the API allows it."""

from __future__ import annotations

import contextlib
import contextvars
import copy
import hashlib
import math
import time
from typing import Any, Callable, Iterable, Sequence

import omero
import omero.clients  # noqa: F401  (before omero.cmd, which fails without the omero.model classes it loads)
import omero.cmd
import omero.grid
import omero.model
from omero.rtypes import rlong, rstring, unwrap

from openhcs_omero_lib.omero import queries as Q
from openhcs_omero_lib.omero.plate import all_groups, in_group, query_params

BULK_ANNOTATIONS_NS = "openmicroscopy.org/omero/bulk_annotations"
BLOCK = 1024 * 1024  # upload block; well under Ice.MessageSizeMax
_LINKS = {"Plate": omero.model.PlateAnnotationLinkI, "Well": omero.model.WellAnnotationLinkI,
          "Image": omero.model.ImageAnnotationLinkI, "Screen": omero.model.ScreenAnnotationLinkI}
_REFS = {"Plate": omero.model.PlateI, "Well": omero.model.WellI, "Image": omero.model.ImageI,
         "Screen": omero.model.ScreenI}


def upload_files(conn, files: Sequence[tuple[str, bytes, str]], group_id: int) -> list[Any]:
    """OriginalFiles for ``(name, data, mimetype)``: one save for all, one file store
    reused for every upload."""
    if not files:
        return []
    opts = in_group(conn, group_id)
    new = []
    for name, data, mimetype in files:
        ofile = omero.model.OriginalFileI()
        ofile.setName(rstring(name))
        ofile.setPath(rstring("openhcs-omero/"))
        ofile.setMimetype(rstring(mimetype))
        ofile.setSize(rlong(len(data)))
        ofile.setHash(rstring(hashlib.sha1(data).hexdigest()))
        hasher = omero.model.ChecksumAlgorithmI()
        hasher.setValue(rstring("SHA1-160"))
        ofile.setHasher(hasher)
        new.append(ofile)
    saved = conn.getUpdateService().saveAndReturnArray(new, opts)
    try:
        store = conn.c.sf.createRawFileStore(opts)
        try:
            for ofile, (_, data, _) in zip(saved, files):
                store.setFileId(ofile.getId().getValue(), opts)
                for pos in range(0, len(data), BLOCK):
                    block = data[pos:pos + BLOCK]
                    store.write(block, pos, len(block), opts)
                store.save(opts)
        finally:
            store.close()
    except Exception:
        _delete_quietly(conn, {"OriginalFile": [o.getId().getValue() for o in saved]}, group_id)
        raise
    return saved


def _delete_quietly(conn, targets: dict[str, list[int]], group_id: int) -> None:
    """Best-effort cleanup after a failure; the original error is what matters."""
    try:
        delete_objects(conn, targets, group_id)
    except Exception:
        pass


def file_annotations(conn, ofiles: Sequence[Any], ns: str, group_id: int, description: str = "") -> list[Any]:
    anns = []
    for ofile in ofiles:
        ann = omero.model.FileAnnotationI()
        ann.setFile(omero.model.OriginalFileI(ofile.getId().getValue(), False))
        ann.setNs(rstring(ns))
        if description:
            ann.setDescription(rstring(description))
        anns.append(ann)
    return list(conn.getUpdateService().saveAndReturnArray(anns, in_group(conn, group_id))) if anns else []


def map_annotations(conn, pairs: Sequence[list[tuple[str, str]]], ns: str, group_id: int) -> list[Any]:
    anns = []
    for kv in pairs:
        ann = omero.model.MapAnnotationI()
        ann.setNs(rstring(ns))
        ann.setMapValue([omero.model.NamedValue(k, v) for k, v in kv])
        anns.append(ann)
    return list(conn.getUpdateService().saveAndReturnArray(anns, in_group(conn, group_id))) if anns else []


_DEFERRED: contextvars.ContextVar[list | None] = contextvars.ContextVar("openhcs_deferred_links", default=None)


def link(conn, kind: str, pairs: Iterable[tuple[int, Any]], group_id: int) -> int:
    """Link each ``(parent ID, annotation)`` to a ``kind`` object; returns how many.
    Inside :func:`deferred_links` the links are only collected."""
    links = []
    for parent_id, ann in pairs:
        lnk = _LINKS[kind]()
        lnk.setParent(_REFS[kind](parent_id, False))
        lnk.setChild(type(ann)(ann.getId().getValue(), False))
        links.append(lnk)
    pending = _DEFERRED.get()
    if pending is not None:
        pending.extend(links)
    elif links:
        conn.getUpdateService().saveArray(links, in_group(conn, group_id))
    return len(links)


@contextlib.contextmanager
def deferred_links():
    """Collect the links :func:`link` makes instead of saving them; save the list
    with :func:`save_links`. Until then the new annotations hang on nothing, so no
    reader sees a set in the making."""
    pending: list = []
    token = _DEFERRED.set(pending)
    try:
        yield pending
    finally:
        _DEFERRED.reset(token)


def save_links(conn, links: list, group_id: int) -> None:
    """Every link in one call: one transaction on the server (IUpdate.saveArray), so
    a reader sees all of a run's results or none, whatever stops the run."""
    if links:
        conn.getUpdateService().saveArray(links, in_group(conn, group_id))


def find_annotations(conn, kind: str, parent_ids: Sequence[int], ns: str,
                     description: Callable[[str], bool] | None = None,
                     ns_prefix: bool = False) -> list[tuple[str, int]]:
    """``(annotation class, ID)`` of annotations of namespace ``ns`` (or, with
    ``ns_prefix``, of every namespace under it) on ``kind`` objects, across the
    user's groups, whose description passes ``description`` if given; in batches
    of 1000 IDs per query."""
    return [(cls, aid) for cls, aid, _ in find_owned_annotations(conn, kind, parent_ids, ns, description, ns_prefix)]


def find_owned_annotations(conn, kind: str, parent_ids: Sequence[int], ns: str,
                           description: Callable[[str], bool] | None = None,
                           ns_prefix: bool = False) -> list[tuple[str, int, int]]:
    """:func:`find_annotations`, each with its owner's ID: ``(class, ID, owner ID)``."""
    found: dict[tuple[str, int, int], None] = {}
    opts = all_groups(conn)
    ids = list(parent_ids)
    query = (Q.ANNOTATION_LINKS_NS_PREFIX if ns_prefix else Q.ANNOTATION_LINKS).format(kind=kind)
    for start in range(0, len(ids), 1000):
        params = query_params(ids=ids[start:start + 1000], ns=ns.rstrip("/") + "/%" if ns_prefix else ns)
        for lnk in conn.getQueryService().findAllByQuery(query, params, opts):
            ann = lnk.getChild()
            if description is not None and not description(unwrap(ann.getDescription()) or ""):
                continue
            owner = ann.getDetails().getOwner().getId().getValue()
            found[(type(ann).__name__.rstrip("I"), ann.getId().getValue(), owner)] = None
    return list(found)


def split_by_owner(conn, found: Iterable[tuple[str, int, int]]) -> tuple[list[tuple[str, int]], dict[str, int]]:
    """The current user's ``(class, ID)`` among ``found``, and how many belong to each
    other user, by user name. A user may remove only their own results: in a
    read-annotate group the server refuses the rest, in a read-write group it would
    delete a colleague's."""
    me = conn.getUserId()
    mine, others = [], {}
    for cls, aid, owner in found:
        if owner == me:
            mine.append((cls, aid))
        else:
            others[owner] = others.get(owner, 0) + 1
    return mine, {user_name(conn, owner): n for owner, n in sorted(others.items())}


def user_name(conn, user_id: int) -> str:
    try:
        return unwrap(conn.getAdminService().getExperimenter(user_id).getOmeName()) or f"user {user_id}"
    except omero.ServerError:
        return f"user {user_id}"


def describe_others(others: dict[str, int]) -> str:
    """``"5 of bob, 2 of carol"``"""
    return ", ".join(f"{n} of {name}" for name, n in others.items())


def delete_objects(conn, targets: dict[str, list[int]], group_id: int, timeout: float = 300) -> None:
    """Delete objects (annotations with their links and files) with a Delete2 command,
    waiting for it by polling the handle."""
    targets = {k: v for k, v in targets.items() if v}
    if not targets:
        return
    request = omero.cmd.Delete2(targetObjects=targets)
    handle = conn.c.sf.submit(request, in_group(conn, group_id))
    try:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            response = handle.getResponse()
            if response is not None:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"deleting {targets} did not finish in {timeout:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        if isinstance(response, omero.cmd.ERR):
            raise RuntimeError(f"delete failed: {response.name} {dict(response.parameters or {})}")
    finally:
        handle.close()


def group_targets(found: Iterable[tuple[str, int]]) -> dict[str, list[int]]:
    targets: dict[str, list[int]] = {}
    for kind, oid in found:
        targets.setdefault(kind, []).append(oid)
    return targets


def read_file_annotation(conn, annotation_id: int, max_bytes: int = 1 << 20) -> tuple[str, bytes]:
    """Name and content of a FileAnnotation's file (at most ``max_bytes``)."""
    opts = all_groups(conn)
    found = conn.getQueryService().findAllByQuery(Q.FILE_ANNOTATION, query_params(id=annotation_id), opts)
    if not found:
        raise LookupError(f"no FileAnnotation with ID {annotation_id} (or you may not read it)")
    ofile = found[0].getFile()
    size = unwrap(ofile.getSize()) or 0
    if size > max_bytes:
        raise ValueError(f"file annotation {annotation_id} is {size} bytes; a pipeline spec is at most {max_bytes}")
    group = found[0].getDetails().getGroup().getId().getValue()
    store = conn.c.sf.createRawFileStore(in_group(conn, group))
    try:
        store.setFileId(ofile.getId().getValue(), in_group(conn, group))
        data = store.read(0, size) if size else b""
    finally:
        store.close()
    return unwrap(ofile.getName()) or f"annotation_{annotation_id}", data


# ---- OMERO.tables ------------------------------------------------------------------------------

def table_columns(frame) -> list[Any]:
    """OMERO.tables columns for a pandas frame: ``Well`` -> WellColumn, ``Image`` ->
    ImageColumn, whole numbers -> LongColumn, other numbers -> DoubleColumn, the rest
    -> StringColumn."""
    import pandas as pd

    columns = []
    for name in frame.columns:
        series = frame[name]
        if name == "Well":
            columns.append(omero.grid.WellColumn("Well", "", [int(v) for v in series]))
        elif name == "Image":
            columns.append(omero.grid.ImageColumn("Image", "", [int(v) for v in series]))
        elif pd.api.types.is_integer_dtype(series) and not series.isna().any():
            columns.append(omero.grid.LongColumn(name, "", [int(v) for v in series]))
        elif pd.api.types.is_numeric_dtype(series):
            values = [float(v) if v is not None and not pd.isna(v) else math.nan for v in series]
            columns.append(omero.grid.DoubleColumn(name, "", values))
        else:
            values = ["" if pd.isna(v) else str(v) for v in series]
            width = max([len(v.encode()) for v in values] + [1])
            columns.append(omero.grid.StringColumn(name, "", width, values))
    return columns


def _with_values(column: Any, values: list) -> Any:
    """A column like ``column`` (name, description, string width) holding ``values``."""
    out = copy.copy(column)
    out.values = values
    return out


TABLE_BATCH_ROWS = 1000
"""Rows sent to OMERO.tables per call"""


def create_table(conn, name: str, frame, group_id: int, batch: int | None = None) -> Any:
    """An OMERO.table with the frame's rows (in calls of ``batch`` rows, default
    :data:`TABLE_BATCH_ROWS`); returns its OriginalFile."""
    batch = batch or TABLE_BATCH_ROWS
    opts = in_group(conn, group_id)
    resources = conn.c.sf.sharedResources(opts)
    repos = resources.repositories(opts)
    if not repos.descriptions:
        raise RuntimeError("the server offers no OMERO.tables repository")
    table = resources.newTable(repos.descriptions[0].getId().getValue(), name, opts)
    if table is None:
        raise RuntimeError("the server could not create an OMERO.table")
    try:
        ofile = table.getOriginalFile(opts)
    except Exception:
        table.close(opts)
        raise
    try:
        columns = table_columns(frame)
        table.initialize([_with_values(c, []) for c in columns], opts)
        for start in range(0, len(frame), batch):
            table.addData([_with_values(c, c.values[start:start + batch]) for c in columns], opts)
    except Exception:
        table.close(opts)
        _delete_quietly(conn, {"OriginalFile": [ofile.getId().getValue()]}, group_id)
        raise
    table.close(opts)
    return ofile
