"""A tour of openhcs-omero's Python API on an OMERO server (the README's "From Python").

    OMERO_HOST=omero.example.org OMERO_USER=me OMERO_PASSWORD=... python examples/omero_tour.py [PLATE_ID]

It logs in, lists the plates you can read, reads one plate's metadata, runs the
nuclei_count preset on it with two parameters tuned (the results are attached to the
plate, replacing your earlier ones), reads the results back from OMERO into pandas,
and saves a table derived from them on the plate. Without PLATE_ID it takes the first
plate listed. The same lines work in a notebook cell. The test suite runs this file
against the OMERO stand-in (tests/test_examples.py).
"""

import os
import sys

from openhcs_omero_lib.api import (
    OMEROFileBackend,
    OMEROInstanceManager,
    OMEROMetadataHandler,
    list_plates,
    pipeline_parameters,
    read_results,
    run_pipeline,
)


def main(argv: list[str]) -> int:
    host = os.environ.get("OMERO_HOST", "localhost")
    port = int(os.environ.get("OMERO_PORT", "4064"))
    # the user and password come from OMERO_USER and OMERO_PASSWORD (or 'omero login')
    with OMEROInstanceManager(host, port) as omero_server:
        conn = omero_server.get_connection()

        plates = list_plates(conn)
        for plate in plates:
            print(f"plate {plate.id}: {plate.name}, {plate.wells} wells, {plate.fields} fields, owner {plate.owner}")
        plate_id = int(argv[0]) if argv else plates[0].id

        meta = OMEROMetadataHandler(conn)
        channels = meta.get_channel_values(plate_id)
        print("channels:", channels)
        print("wells:", meta.get_well_values(plate_id))
        print("fields:", meta.get_site_values(plate_id), "z:", meta.get_z_index_values(plate_id),
              "timepoints:", meta.get_timepoint_values(plate_id))

        print("nuclei_count can tune:", ", ".join(pipeline_parameters("nuclei_count")))
        result = run_pipeline(plate_id, "nuclei_count", conn=conn, workers=2,
                              nuclear_channel=channels[0], min_nucleus_size=30)
        print(result.wells[["well", "sites", "nuclei_count"]].to_string(index=False))
        print("attached:", result.attached)

        back = read_results(conn, plate_id, "nuclei_count")
        per_row = back.wells.groupby("row", as_index=False)["nuclei_count"].sum()

        files = OMEROFileBackend(conn)
        saved = files.save(per_row, "nuclei_per_row.csv", f"Plate:{plate_id}")
        print(f"saved {saved.file.name} on {saved.file.target} as FileAnnotation:{saved.file.annotation_id}")
        print(files.load("nuclei_per_row.csv", f"/omero/plate_{plate_id}").to_string(index=False))
    return 0


if __name__ == "__main__":  # workers are new processes that import this file: run only here
    sys.exit(main(sys.argv[1:]))
