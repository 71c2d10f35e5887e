"""Every HQL query the adapter sends, in one place.

Keeping them here lets the test stand-in answer exactly these (and refuse others),
and lets a reader see the adapter's whole cost on the server at a glance: a plate's
layout costs :data:`PLATE_FINGERPRINT` when cached, plus :data:`PLATE_FIELDS` and
:data:`PIXELS_CHANNELS` when not, whatever the plate's size.
"""

# Cheap check whether a cached layout is still current: any change to the plate or
# to its well samples (fields added, removed, moved in their well's list, images
# replaced, moved to another run) or to its runs (renamed) moves one of these values.
# The plate's name and format come along, so that a layout needs no other plate query.
PLATE_FINGERPRINT = (
    "select p.id, p.details.group.id, p.details.updateEvent.id, count(ws.id), "
    "max(ws.details.updateEvent.id), p.name, p.rows, p.columns, sum(index(ws)), "
    "max(pa.details.updateEvent.id) "
    "from Plate p left outer join p.wells w left outer join w.wellSamples ws "
    "left outer join ws.plateAcquisition pa "
    "where p.id = :id group by p.id, p.details.group.id, p.details.updateEvent.id, "
    "p.name, p.rows, p.columns"
)

# Every well and field of a plate as plain IDs and positions, in one round-trip. Not
# as model objects (wells, fields, images, pixels): those cost the script tens of kB
# per image, hundreds of MB on a 1536-well plate of 9 fields; these a few hundred bytes.
# A field's number is its index in its well's list of well samples (Well.wellSamples is
# an ordered list, omero-model mappings/screen.ome.xml), which may have gaps; the run
# (PlateAcquisition) it belongs to comes with its name. OMERO.web's plate grid selects
# fields the same way (omero-web webgateway/plategrid.py: index(ws), ws.plateAcquisition).
PLATE_FIELDS = (
    "select w.id, w.row, w.column, ws.id, i.id, px.id, index(ws), pa.id, pa.name "
    "from Well w left outer join w.wellSamples ws left outer join ws.plateAcquisition pa "
    "left outer join ws.image i left outer join i.pixels px "
    "where w.plate.id = :id order by w.row, w.column, index(ws)"
)

# Size, pixel type, channel names and wavelengths of one image (a plate's images share them).
PIXELS_CHANNELS = (
    "select px from Pixels px "
    "join fetch px.pixelsType "
    "join fetch px.channels c "
    "join fetch c.logicalChannel "
    "where px.id = :id"
)

# The original files of a plate's filesets, for reading them from the managed repository
# (omero-model mappings/fs.ome.xml: Image.fileset, Fileset.usedFiles -> FilesetEntry ->
# OriginalFile; a file's path is relative to the repository's root and ends with "/",
# omero-blitz repo/CheckedPath.getRelativePath). One round-trip whatever the plate's size:
# each file once (not once per image), with how many images its fileset has (the
# subquery is the one omero-py's `omero fs sets` sends), so that a plate with images in
# no fileset or in several can be told apart. Permission-checked like every query.
PLATE_FILESET_FILES = (
    "select fs.id, (select size(f2.images) from Fileset f2 where f2.id = fs.id), f.path, f.name, f.size "
    "from Fileset fs join fs.usedFiles fe join fe.originalFile f "
    "where fs.id in (select i.fileset.id from WellSample ws join ws.image i where ws.well.plate.id = :id) "
    "order by fs.id, f.path, f.name"
)

# What an ID is when it is not the expected kind: {kind} is a model class name.
OBJECT_EXISTS = "select o.id from {kind} o where o.id = :id"

# The plates of a screen.
SCREEN_PLATES = "select l.child.id from ScreenPlateLink l where l.parent.id = :id order by l.child.id"

# Annotations of one namespace on objects of one kind: {kind} is Plate, Well or Image.
ANNOTATION_LINKS = (
    "select l from {kind}AnnotationLink l "
    "join fetch l.child a "
    "where l.parent.id in (:ids) and a.ns = :ns"
)

# Annotations whose namespace starts with a prefix, on objects of one kind.
ANNOTATION_LINKS_NS_PREFIX = (
    "select l from {kind}AnnotationLink l "
    "join fetch l.child a "
    "where l.parent.id in (:ids) and a.ns like :ns"
)

# A file annotation with its file, e.g. a pipeline spec attached by a user.
FILE_ANNOTATION = "select a from FileAnnotation a join fetch a.file where a.id = :id"

# Plates the user can see, with their size, owner and group, for listing.
PLATE_LIST = (
    "select p.id, p.name, count(distinct w.id), count(ws.id), max(px.sizeC), o.omeName, g.name "
    "from Plate p join p.details.owner o join p.details.group g "
    "left outer join p.wells w left outer join w.wellSamples ws "
    "left outer join ws.image i left outer join i.pixels px "
    "group by p.id, p.name, o.omeName, g.name order by p.id"
)

# A pipeline spec the user uploaded before (same namespace and content hash), so that
# launching with the same file again reuses it instead of adding another copy.
PIPELINE_UPLOAD = (
    "select a from FileAnnotation a join fetch a.file "
    "where a.ns = :ns and a.description = :description and a.details.owner.id = :owner"
)

# The plate as an object, so that the server sends its details.permissions with the
# caller's restrictions (canAnnotate), as it does with every object it returns.
PLATE_PERMISSIONS = "select p from Plate p where p.id = :id"

# This bundle's ROIs on images, IDs and owners only: a ROI has no namespace, so its
# description holds the results' namespace (see omero/rois.py).
ROIS = ("select r.id, r.details.owner.id from Roi r "
        "where r.image.id in (:ids) and r.description = :ns")

# ROIs whose description is a namespace under a prefix, on images.
ROIS_NS_PREFIX = ("select r.id, r.details.owner.id from Roi r "
                  "where r.image.id in (:ids) and r.description like :ns")

# The kinds of image a plate holds (size, channels, z, timepoints, pixel type), how
# many of each and one of them: a run reads every field as its first image is, so a
# plate needs them alike.
PLATE_IMAGE_KINDS = (
    "select px.sizeX, px.sizeY, px.sizeC, px.sizeZ, px.sizeT, pt.value, count(px.id), min(i.id) "
    "from Well w join w.wellSamples ws join ws.image i join i.pixels px join px.pixelsType pt "
    "where w.plate.id = :id "
    "group by px.sizeX, px.sizeY, px.sizeC, px.sizeZ, px.sizeT, pt.value"
)

# One Plate, Well or Image ({kind}) as an object: its details hold its group, its owner
# and the caller's permissions on it (canAnnotate), as the server sends every object.
OBJECT_DETAILS = "select o from {kind} o where o.id = :id"

# The annotations of one namespace on one Plate, Well or Image ({kind}), a file
# annotation's file (name, mimetype, size) fetched with it: what the Python API's file
# backend lists, and where it finds a run's tables and CSVs. BlitzGateway's
# listAnnotations fetches a.file the same way, an outer join since an annotation need
# not be a file annotation (omero-py gateway BlitzObjectWrapper._loadAnnotationLinks).
FILE_ANNOTATION_LINKS = (
    "select l from {kind}AnnotationLink l "
    "join fetch l.child a left outer join fetch a.file "
    "where l.parent.id = :id and a.ns = :ns"
)
