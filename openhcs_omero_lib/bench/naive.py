"""The baseline: an OMERO script as script authors write it today.

Walk the plate with BlitzGateway, read every plane with
``image.getPrimaryPixels().getPlane(z, c, t)``, compute, and upload one CSV at the
end. The computing is this package's (:func:`~..pipeline.run.run_unit` on a bound
spec), so the work per site is identical to openhcs-omero's and only the way pixels
and metadata reach it differs: here every image costs a pixels load
(``IContainer.getImages``) and every plane a fresh RawPixelsStore (create, set the
pixels, read, close), one process, nothing overlapped.
"""

from __future__ import annotations

import csv
import io

import numpy as np

from openhcs_omero_lib.pipeline.run import run_unit
from openhcs_omero_lib.pipeline.spec import PipelineSpec, bind_to_plate
from openhcs_omero_lib.plates.layout import well_name

NAMESPACE = "openhcs.omero/bench/naive"


def measure_plate(conn, plate_id: int, spec: PipelineSpec):
    """Every field of the plate measured; returns the plate wrapper and the rows."""
    plate = conn.getObject("Plate", plate_id)
    rows: list[dict] = []
    bound = None
    for well in plate.listChildren():
        name = well_name(well.row + 1, well.column + 1)
        for index, sample in enumerate(well.listChildren()):
            image = sample.getImage()
            pixels = image.getPrimaryPixels()
            size_z, size_c = image.getSizeZ(), image.getSizeC()
            if bound is None:
                bound = bind_to_plate(spec, size_c)
            for t in range(image.getSizeT()):
                def read(channel: int, pixels=pixels, size_z: int = size_z, t: int = t) -> np.ndarray:
                    return np.stack([pixels.getPlane(z, channel - 1, t) for z in range(size_z)])

                row = {"well": name, "site": index + 1, "timepoint": t + 1}
                row.update(run_unit(bound, read))
                rows.append(row)
    return plate, rows


def upload_results(conn, plate, rows: list[dict], name: str) -> int:
    """One CSV file annotation on the plate; returns its ID."""
    import omero.model
    from omero.gateway import FileAnnotationWrapper
    from omero.rtypes import rstring

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["well"])
    writer.writeheader()
    writer.writerows(rows)
    data = text.getvalue().encode()
    original = conn.createOriginalFileFromFileObj(io.BytesIO(data), "", name, len(data), mimetype="text/csv")
    ann = omero.model.FileAnnotationI()
    ann.setFile(omero.model.OriginalFileI(original.getId(), False))
    ann.setNs(rstring(NAMESPACE))
    ann = FileAnnotationWrapper(conn, conn.getUpdateService().saveAndReturnObject(ann, conn.SERVICE_OPTS))
    plate.linkAnnotation(ann)
    return ann.getId()


def naive_script(conn, plate_id: int, spec: PipelineSpec) -> list[dict]:
    """The whole script: measure, then upload."""
    plate, rows = measure_plate(conn, plate_id, spec)
    upload_results(conn, plate, rows, f"{spec.name}_naive.csv")
    return rows
