"""What is checked before a run computes anything, so that it never computes for an
hour and then fails to save: the user may annotate every plate, OMERO.tables is
running when a table is asked for, every plate's images are alike, and the server has
the plates' images ready."""

from __future__ import annotations

import omero
from omero.rtypes import unwrap

from openhcs_omero_lib.omero import queries as Q
from openhcs_omero_lib.omero.plate import OmeroInputError, OmeroPlate, all_groups, in_group, query_params


class PlateNotReady(OmeroInputError):
    """The server is still preparing a plate's images (building their pyramids)."""


def not_ready_message(plate: OmeroPlate) -> str:
    return (f"plate {plate.id} ({plate.layout.name}): its images are still being prepared by the server "
            "(pyramid not built); try again later")


def _group_kind(permissions) -> str:
    if permissions.isGroupWrite():
        return "read-write"
    if permissions.isGroupAnnotate():
        return "read-annotate"
    return "read-only" if permissions.isGroupRead() else "private"


def check_can_annotate(conn, plate: OmeroPlate) -> None:
    """Raise :class:`OmeroInputError` unless the user may attach results to the plate.
    The server sends each object with the caller's restrictions (omero-server
    BasicACLVoter.postProcess); ``canAnnotate()`` reads them, as OMERO.web does."""
    found = conn.getQueryService().findAllByQuery(Q.PLATE_PERMISSIONS, query_params(id=plate.id), all_groups(conn))
    if not found:
        raise OmeroInputError(f"no Plate with ID {plate.id} (or you may not read it)")
    details = found[0].getDetails()
    permissions = details.getPermissions()
    if not permissions.canAnnotate():
        mine = details.getOwner().getId().getValue() == conn.getUserId()
        whose = "your plate" if mine else f"another user's plate in a {_group_kind(permissions)} group"
        raise OmeroInputError(f"plate {plate.id} ({plate.layout.name}): you have no permission to annotate it "
                              f"({whose}), so its results could not be attached")


def _kind(row: list) -> str:
    x, y, c, z, t, ptype = row[:6]
    return (f"{x}x{y} px, {c} channel{'s' if c != 1 else ''}, {z} z, {t} timepoint{'s' if t != 1 else ''}, "
            f"{ptype}")


def check_alike(conn, plates: list[OmeroPlate]) -> None:
    """Raise :class:`OmeroInputError` for the first plate whose images differ in
    size, channels, z, timepoints or pixel type: its layout, and so every field's
    reading, comes from its first image. One query per plate."""
    query = conn.getQueryService()
    for plate in plates:
        rows = [[unwrap(v) for v in row] for row in query.projection(
            Q.PLATE_IMAGE_KINDS, query_params(id=plate.id), all_groups(conn))]
        if len(rows) > 1:
            rows.sort(key=lambda r: -r[6])
            total = sum(r[6] for r in rows)
            odd = "; ".join(f"{r[6]} {_kind(r)} (e.g. image {r[7]})" for r in rows[1:3])
            raise OmeroInputError(f"plate {plate.id} ({plate.layout.name}): its images are not alike: "
                                  f"{rows[0][6]} of {total} are {_kind(rows[0])}, but {odd}; "
                                  "a run needs every field of a plate alike")


def check_tables(conn) -> None:
    """Raise :class:`OmeroInputError` unless the server runs OMERO.tables. Without it
    the server saves a table's file and then fails to open it (omero-blitz
    ``SharedResourcesI.newTable``)."""
    if not conn.c.sf.sharedResources().areTablesEnabled():
        raise OmeroInputError("OMERO.tables is not running on this server: leave out the table output "
                              "(OMERO_Table in the dialog, 'table' in --outputs) or ask the server's "
                              "administrator to enable it")


def check_ready(conn, plates: list[OmeroPlate]) -> None:
    """Raise :class:`PlateNotReady` for the plates whose images the server cannot
    serve yet. An image larger than the server's pyramid threshold raises
    MissingPyramidException from ``setPixelsId`` until its pyramid is built
    (omero-romio ``PixelsService``, omero-server ``RawPixelsBean``), which the server
    does after import, roughly in the order the images came (omero-server
    ``PixelDataThread`` works through the import's event logs in order). So the
    plate's last image stands for it: one call per plate. An earlier image that
    is still not ready stops the plate when it is read (:class:`OmeroPixelSource`)."""
    waiting = []
    for group_id in sorted({p.group_id for p in plates}):
        opts = in_group(conn, group_id)
        store = conn.c.sf.createRawPixelsStore(opts)
        try:
            for plate in (p for p in plates if p.group_id == group_id):
                try:
                    store.setPixelsId(max(plate.pixels_ids.values()), True, opts)
                except omero.MissingPyramidException:
                    waiting.append(plate)
        finally:
            store.close()
    if waiting:
        waiting.sort(key=plates.index)
        raise PlateNotReady("; ".join(not_ready_message(p) for p in waiting))
