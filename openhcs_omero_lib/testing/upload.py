"""Putting an ImageXpress folder on an OMERO server through the API, without Java.

``omero import`` needs Java and Bio-Formats; a test suite that only needs a plate of
known content on a server can create it with the calls omero-py's
``BlitzGateway.createImageFromNumpySeq`` makes: ``IPixels.createImage`` for each
field, a ``RawPixelsStore`` to write its planes (big-endian), channel names and
wavelengths on the LogicalChannels, then the Plate, its Wells and WellSamples in one
``IUpdate`` save. :func:`delete_plate` removes such a plate again with its images.

The same calls work on a real server and on the stand-in
(:class:`~openhcs_omero_lib.testing.OmeroStandIn`), which models exactly these.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterable, Sequence

import numpy as np
import omero
import omero.model
from omero.rtypes import rint, rstring, unwrap

from openhcs_omero_lib.omero import annotations as A
from openhcs_omero_lib.omero import queries as Q
from openhcs_omero_lib.omero.plate import all_groups, in_group, query_params
from openhcs_omero_lib.plates.imagexpress import ImageXpressSource
from openhcs_omero_lib.plates.layout import PlateLayout

# How omero-py looks up a pixel type (BlitzGateway.createImageFromNumpySeq).
PIXELS_TYPE = "from PixelsType as p where p.value = :value"


def write_group(conn) -> int:
    """The group new objects go to: the connection's call context if it names one,
    else the session's group."""
    group = conn.SERVICE_OPTS.getOmeroGroup()
    if group not in (None, "", "-1", -1):
        return int(group)
    return conn.getEventContext().groupId


def upload_plate(conn, folder: str | os.PathLike | Sequence[tuple[str, str | os.PathLike]], *,
                 name: str | None = None, missing: Iterable[tuple] = ()) -> int:
    """Create a plate holding the ImageXpress folder's fields; returns its ID.

    ``folder`` may instead be a list of ``(run name, folder)``: a plate imaged in
    several runs (one PlateAcquisition each; the folders have the same wells and
    fields), every well listing the fields of all runs, run after run. ``missing``
    names fields to leave out, as ``(well, site)`` (or ``(run name, well, site)``
    with runs): they are created and then deleted, as a field removed from a plate
    is, which leaves a gap in its well's list of well samples.

    If anything fails, the images created so far are deleted again."""
    runs = [(None, folder)] if isinstance(folder, (str, os.PathLike)) else list(folder)
    gaps = {tuple(m) if runs[0][0] is not None else (None, *m) for m in missing}
    group_id = write_group(conn)
    opts = in_group(conn, group_id)
    with contextlib.ExitStack() as stack:
        sources = [stack.enter_context(ImageXpressSource(f)) for _, f in runs]
        layout = sources[0].layout
        if any(s.layout.well_names != layout.well_names or s.layout.sites != layout.sites for s in sources):
            raise ValueError("every run must have the wells and fields of the first")
        name = name or layout.name
        ptype = conn.getQueryService().findByQuery(PIXELS_TYPE, query_params(value=layout.dtype), opts)
        if ptype is None:
            raise ValueError(f"the server has no pixel type {layout.dtype!r}")
        images: dict[tuple[str | None, str, int], int] = {}
        try:
            pixels_service = conn.getPixelsService()
            for run_name, _ in runs:
                label = f" {run_name}" if run_name is not None else ""
                for well in layout.wells:
                    for site in range(1, layout.sites + 1):
                        height, width = layout.plane_shape
                        iid = pixels_service.createImage(
                            width, height, layout.z_planes, layout.timepoints, list(range(len(layout.channels))),
                            ptype, f"{name}{label} {well.name} field {site}", "", opts)
                        images[(run_name, well.name, site)] = iid.getValue()
            loaded = conn.getContainerService().getImages("Image", list(images.values()), None, opts)
            pixels = {img.getId().getValue(): img.getPrimaryPixels().getId().getValue() for img in loaded}
            _describe(conn, layout, list(pixels.values()), opts)
            for (run_name, _), source in zip(runs, sources):
                _write_planes(conn, source, layout, {(well, site): pixels[iid]
                                                     for (r, well, site), iid in images.items()
                                                     if r == run_name and (r, well, site) not in gaps}, opts)
            plate_id = _save_plate(conn, layout, name, [r for r, _ in runs], images, opts)
        except BaseException:
            try:
                A.delete_objects(conn, {"Image": list(images.values())}, group_id)
            except Exception:  # the upload's own error is the one worth seeing
                pass
            raise
        removed = [images[key] for key in images if key in gaps]
        if removed:
            try:
                A.delete_objects(conn, {"Image": removed}, group_id)
            except BaseException:
                delete_plate(conn, plate_id)
                raise
        return plate_id


def _describe(conn, layout: PlateLayout, pixels_ids: list[int], opts) -> None:
    """Channel names and wavelengths, and the pixel size: createImage leaves them empty."""
    changed = []
    for pid in pixels_ids:
        found = conn.getQueryService().findAllByQuery(Q.PIXELS_CHANNELS, query_params(id=pid), opts)
        if not found:
            raise RuntimeError(f"the new Pixels:{pid} has no channels")
        px = found[0]
        for channel, ch in zip(layout.channels, px.copyChannels(), strict=True):
            lc = ch.getLogicalChannel()
            lc.setName(rstring(channel.name))
            if channel.emission_wavelength:
                lc.setEmissionWave(omero.model.LengthI(channel.emission_wavelength, "NANOMETER"))
            changed.append(lc)
        if layout.pixel_size_um:
            px.setPhysicalSizeX(omero.model.LengthI(layout.pixel_size_um, "MICROMETER"))
            px.setPhysicalSizeY(omero.model.LengthI(layout.pixel_size_um, "MICROMETER"))
            # The logical channels are saved on their own, once.
            px.unloadChannels()
            changed.append(px)
    conn.getUpdateService().saveArray(changed, opts)


def _write_planes(conn, source: ImageXpressSource, layout: PlateLayout,
                  pixels_ids: dict[tuple[str, int], int], opts) -> None:
    wire = np.dtype(layout.dtype).newbyteorder(">")  # OMERO stores and sends big-endian
    store = conn.c.sf.createRawPixelsStore(opts)
    try:
        for (well, site), pid in pixels_ids.items():
            store.setPixelsId(pid, True, opts)
            for z in range(layout.z_planes):
                for c in range(len(layout.channels)):
                    for t in range(layout.timepoints):
                        plane = source.read_plane(well, site, c + 1, z + 1, t + 1)
                        store.setPlane(np.ascontiguousarray(plane, dtype=wire).tobytes(), z, c, t, opts)
            store.save(opts)
    finally:
        store.close(opts)


def _save_plate(conn, layout: PlateLayout, name: str, runs: list[str | None],
                images: dict[tuple[str | None, str, int], int], opts) -> int:
    plate = omero.model.PlateI()
    plate.setName(rstring(name))
    plate.setRows(rint(layout.rows))
    plate.setColumns(rint(layout.columns))
    # How viewers label the grid, as an import of an ImageXpress plate does.
    plate.setRowNamingConvention(rstring("letter"))
    plate.setColumnNamingConvention(rstring("number"))
    acquisitions = {}
    for run_name in runs:
        if run_name is not None:
            acquisition = omero.model.PlateAcquisitionI()
            acquisition.setName(rstring(run_name))
            plate.addPlateAcquisition(acquisition)
            acquisitions[run_name] = acquisition
    for well in layout.wells:
        w = omero.model.WellI()
        w.setRow(rint(well.row - 1))  # OMERO counts from 0
        w.setColumn(rint(well.column - 1))
        for run_name in runs:  # a well's list: the fields of each run, run after run
            for site in range(1, layout.sites + 1):
                sample = omero.model.WellSampleI()
                sample.setImage(omero.model.ImageI(images[(run_name, well.name, site)], False))
                if run_name is not None:
                    sample.setPlateAcquisition(acquisitions[run_name])
                w.addWellSample(sample)
        plate.addWell(w)
    return conn.getUpdateService().saveAndReturnObject(plate, opts).getId().getValue()


def delete_plate(conn, plate_id: int) -> bool:
    """Delete a plate with its wells, fields and images; False when there is no such
    plate (or it is not readable)."""
    query, opts = conn.getQueryService(), all_groups(conn)
    found = query.projection(Q.PLATE_FINGERPRINT, query_params(id=plate_id), opts)
    if not found:
        return False
    group = unwrap(found[0][1])
    images = [unwrap(row[4]) for row in query.projection(Q.PLATE_FIELDS, query_params(id=plate_id), opts)
              if row[4] is not None]
    A.delete_objects(conn, {"Plate": [plate_id], "Image": images}, group)
    return True


__all__ = ["PIXELS_TYPE", "delete_plate", "upload_plate", "write_group"]
