"""Files on plates, wells and images: the OMERO backend of the Python API's ``save``.

:class:`OMEROFileBackend` keeps a user's files as FileAnnotations in the project's
namespace (:data:`FILES_NS`), each in the group of the object it is attached to (the
server refuses a link across groups). What is saved becomes:

- a dict or a list: JSON (``application/json``), the name must end in ``.json``;
- a pandas DataFrame: CSV without the index (``text/csv``), the name ends in ``.csv``;
- bytes: as given, with the ``mimetype`` given or guessed from the name;
- text: UTF-8, with the mimetype given or guessed (``text/plain`` otherwise).

Saving a name again replaces the user's own file of that name on that object (the new
one is saved first, then the old one removed), as a re-run replaces its results;
another user's file of the same name stays, and :class:`SavedFile` says whose.
Targets are what :mod:`.targets` reads: ``"Plate:51"``, a well or image object, or a
virtual path, which may also carry the file's name: ``save(df, "/omero/plate_51/A01/counts.csv")``.
"""

from __future__ import annotations

import builtins
import io
import json
import mimetypes
from dataclasses import dataclass, field
from typing import Any

from omero.rtypes import unwrap

from openhcs_omero_lib.omero import annotations as A
from openhcs_omero_lib.omero import queries as Q
from openhcs_omero_lib.omero.plate import all_groups, in_group, query_params
from openhcs_omero_lib.omero.targets import Target, TargetError, resolve, split_path

FILES_NS = "openhcs.omero/files"
MAX_NAME = 255


@dataclass(frozen=True)
class StoredFile:
    """One saved file as :meth:`OMEROFileBackend.list` shows it."""

    name: str
    annotation_id: int
    file_id: int
    mimetype: str
    size: int
    owner_id: int
    mine: bool
    target: str


@dataclass(frozen=True)
class SavedFile:
    """What :meth:`OMEROFileBackend.save` did."""

    file: StoredFile
    replaced: int = 0
    """how many of your earlier files of this name on the target it removed"""
    others: dict[str, int] = field(default_factory=dict)
    """other users' files of this name on the target, left in place: user name -> count"""
    replace_error: str = ""
    """why an earlier file could not be removed (the new one is saved all the same)"""


class OMEROFileBackend:
    """Save, load and list files on OMERO plates, wells and images (see the module)."""

    def __init__(self, conn, namespace: str = FILES_NS):
        if not namespace or not isinstance(namespace, str):
            raise ValueError("namespace must be a non-empty string")
        self.conn = conn
        self.namespace = namespace

    def save(self, obj: Any, name: str, target: Any = None, *, mimetype: str | None = None) -> SavedFile:
        """Save ``obj`` as ``name`` on ``target`` (or on the target of a virtual path
        given as ``name``). Bad input raises before anything is written; a failed
        save leaves nothing behind and your earlier file as it was."""
        target, name = _target_and_name(target, name)
        data, mimetype = encode(obj, name, mimetype)
        found = resolve(self.conn, target, annotate=True)
        same = [f for f in self._files(found) if f.name == name]
        mine = [f.annotation_id for f in same if f.mine]
        new = self._upload(found, name, data, mimetype)
        replaced, error = 0, ""
        if mine:
            try:
                A.delete_objects(self.conn, {"FileAnnotation": mine}, found.group_id)
                replaced = len(mine)
            except Exception as exc:  # the new file is saved; say what is left over
                error = getattr(exc, "message", None) or str(exc)
        others: dict[str, int] = {}
        for f in same:
            if not f.mine:
                user = A.user_name(self.conn, f.owner_id)
                others[user] = others.get(user, 0) + 1
        return SavedFile(new, replaced, others, error)

    def load(self, name: str, target: Any = None, *, raw: bool = False) -> Any:
        """The content of the file ``name`` on ``target``: JSON as Python objects, CSV
        as a DataFrame, anything else (or with ``raw``) as bytes. Your own file of that
        name if you saved one, else the newest. Raises FileNotFoundError."""
        target, name = _target_and_name(target, name)
        found = resolve(self.conn, target)
        stored = self.find(name, found)
        data = read_file(self.conn, stored.file_id, stored.size, found.group_id)
        return data if raw else decode(data, stored.mimetype)

    def find(self, name: str, target: Any) -> StoredFile:
        """The file ``name`` on ``target`` that :meth:`load` reads."""
        found = target if isinstance(target, Target) else resolve(self.conn, target)
        same = [f for f in self._files(found) if f.name == name]
        if not same:
            raise FileNotFoundError(f"no file named {name!r} on {found.label} (namespace {self.namespace})")
        return max(same, key=lambda f: (f.mine, f.annotation_id))

    def list(self, target: Any) -> builtins.list[StoredFile]:
        """Every file of this namespace on ``target``, by name (yours and others')."""
        return self._files(resolve(self.conn, target))

    # ---- internals -----------------------------------------------------------------------------

    def _files(self, target: Target) -> builtins.list[StoredFile]:
        return file_annotations(self.conn, target.kind, target.id, self.namespace, target.label)

    def _upload(self, target: Target, name: str, data: bytes, mimetype: str) -> StoredFile:
        """File, annotation and link, or nothing: what was made is removed on failure."""
        conn, group = self.conn, target.group_id
        made: dict[str, builtins.list[int]] = {}
        try:
            ofile = A.upload_files(conn, [(name, data, mimetype)], group)[0]
            made["OriginalFile"] = [ofile.getId().getValue()]
            ann = A.file_annotations(conn, [ofile], self.namespace, group)[0]
            made = {"FileAnnotation": [ann.getId().getValue()]}  # the annotation owns its file now
            A.link(conn, target.kind, [(target.id, ann)], group)
        except BaseException:
            if made:
                try:
                    A.delete_objects(conn, made, group)
                except Exception:
                    pass  # the original error is what matters
            raise
        return StoredFile(name, ann.getId().getValue(), ofile.getId().getValue(), mimetype, len(data),
                          conn.getUserId(), True, target.label)


def _target_and_name(target: Any, name: str) -> tuple[Any, str]:
    if target is None:
        target, name = split_path(name)
    if not isinstance(name, str) or not name.strip() or "/" in name or len(name) > MAX_NAME:
        raise TargetError(f"{name!r} is not a file name (1 to {MAX_NAME} characters, no '/')")
    return target, name


def file_annotations(conn, kind: str, object_id: int, namespace: str, label: str = "") -> list[StoredFile]:
    """The FileAnnotations of ``namespace`` on a Plate, Well or Image, with their
    files, by name (one query; other annotations of the namespace are left out)."""
    links = conn.getQueryService().findAllByQuery(
        Q.FILE_ANNOTATION_LINKS.format(kind=kind), query_params(id=object_id, ns=namespace), all_groups(conn))
    label = label or f"{kind}:{object_id}"
    me = conn.getUserId()
    out = {}
    for link in links:
        ann = link.getChild()
        ofile = ann.getFile() if hasattr(ann, "getFile") else None
        if ofile is None or not ofile.isLoaded():  # not a file annotation
            continue
        owner = ann.getDetails().getOwner().getId().getValue()
        out[ann.getId().getValue()] = StoredFile(
            unwrap(ofile.getName()) or "", ann.getId().getValue(), ofile.getId().getValue(),
            unwrap(ofile.getMimetype()) or "", unwrap(ofile.getSize()) or 0, owner, owner == me, label)
    return sorted(out.values(), key=lambda f: (f.name, f.annotation_id))


def read_file(conn, file_id: int, size: int, group_id: int) -> bytes:
    """An OriginalFile's bytes, read in blocks well under Ice's message limit."""
    opts = in_group(conn, group_id)
    store = conn.c.sf.createRawFileStore(opts)
    try:
        store.setFileId(file_id, opts)
        return b"".join(store.read(pos, min(A.BLOCK, size - pos), opts) for pos in range(0, size, A.BLOCK))
    finally:
        store.close()


def encode(obj: Any, name: str, mimetype: str | None = None) -> tuple[bytes, str]:
    """``(bytes, mimetype)`` of what :meth:`OMEROFileBackend.save` stores; TypeError or
    ValueError for what it cannot store under that name."""
    import pandas as pd

    lower = name.lower()
    if isinstance(obj, (dict, list, tuple)):
        if not lower.endswith(".json"):
            raise ValueError(f"a {type(obj).__name__} is saved as JSON: name it '<something>.json', not {name!r}")
        try:
            text = json.dumps(obj, indent=2, default=_json_default, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}: cannot be written as JSON: {exc}") from None
        return (text + "\n").encode(), "application/json"
    if isinstance(obj, pd.DataFrame):
        if not lower.endswith(".csv"):
            raise ValueError(f"a DataFrame is saved as CSV: name it '<something>.csv', not {name!r}")
        return obj.to_csv(index=False).encode(), "text/csv"
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj), mimetype or mimetypes.guess_type(name)[0] or "application/octet-stream"
    if isinstance(obj, str):
        return obj.encode("utf-8"), mimetype or mimetypes.guess_type(name)[0] or "text/plain"
    raise TypeError(f"cannot save a {type(obj).__name__}: give a dict or list (JSON), a pandas DataFrame "
                    "(CSV), bytes or str")


def decode(data: bytes, mimetype: str) -> Any:
    if mimetype == "application/json":
        return json.loads(data.decode("utf-8"))
    if mimetype == "text/csv":
        return read_csv(data)
    return data


def read_csv(data: bytes, **options: Any):
    """A CSV as a DataFrame whose numbers are exactly those written: pandas before 3
    parses floats to the nearest value only when asked (``float_precision``, which
    pandas 3 does by default and deprecates)."""
    import pandas as pd

    if int(pd.__version__.split(".")[0]) < 3:
        options.setdefault("float_precision", "round_trip")
    return pd.read_csv(io.BytesIO(data), **options)


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


__all__ = ["FILES_NS", "OMEROFileBackend", "SavedFile", "StoredFile", "decode", "encode", "file_annotations",
           "read_csv", "read_file"]
