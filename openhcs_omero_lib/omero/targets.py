"""What a file, a run or a metadata question is aimed at, named as a user has it at hand.

A target is a plate, a well or a field's image, given as:

- OMERO's ``Class:ID`` text (``"Plate:51"``, ``"Well:7"``, ``"Image:9"``), as the
  ``omero`` command line and ezomero write it;
- a BlitzGateway wrapper (``conn.getObject("Plate", 51)``) or an ``omero.model`` object;
- a virtual path, as OpenHCS names an OMERO plate: ``/omero/plate_51`` (the plate),
  ``/omero/plate_51/A01`` (its well A01), ``/omero/plate_51/A01_s002`` (the image of
  field 2 of A01, as the virtual backend names that field's planes);
- where only a plate makes sense, its plain ID (``51``).

:func:`plate_id_of` reads a plate without asking the server; :func:`resolve` finds
any target on the server with its group and, when asked, checks that the user may
annotate it. Every refusal is a :class:`TargetError` with one line saying why.
"""

from __future__ import annotations

import numbers
import re
from dataclasses import dataclass
from typing import Any

from omero.rtypes import unwrap

from openhcs_omero_lib.omero import queries as Q
from openhcs_omero_lib.omero.plate import OmeroInputError, all_groups, load_plate, query_params
from openhcs_omero_lib.omero.preflight import _group_kind as group_kind
from openhcs_omero_lib.plates.layout import parse_well, well_name

KINDS = ("Plate", "Well", "Image")
_OTHER_KINDS = ("Screen", "Dataset", "Project")
_CLASS_ID = re.compile(r"^\s*([A-Za-z]+)\s*:\s*(\S+)\s*$")
_VIRTUAL = re.compile(r"^/omero/plate_(\d+)(?:/([A-Za-z]{1,2}\d{1,3})(?:_s(\d+))?)?/?$")


class TargetError(OmeroInputError):
    """A target that is malformed, of the wrong kind, missing, or not yours to annotate."""


@dataclass(frozen=True)
class Target:
    """A plate, well or image found on the server."""

    kind: str
    id: int
    group_id: int
    owner_id: int
    can_annotate: bool
    label: str
    """how messages name it, e.g. ``Plate:51`` or ``well A01 of plate 51 (Well:7)``"""

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True)
class _Virtual:
    plate_id: int
    well: str | None = None
    site: int | None = None


def _an(word: str) -> str:
    return f"an {word}" if word[:1] in "AEIOU" else f"a {word}"


def parse(value: Any) -> tuple[str, int] | _Virtual:
    """``(kind, ID)`` or a virtual path's parts, without asking the server."""
    if isinstance(value, bool):
        raise TargetError(f"not a target: {value!r}")
    if isinstance(value, numbers.Integral):
        raise TargetError(f"{value} is an ID without its kind: write 'Plate:{value}', 'Well:{value}' "
                          f"or 'Image:{value}'")
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("/"):
            match = _VIRTUAL.match(text)
            if not match:
                raise TargetError(f"{value!r} is not a virtual path of the form /omero/plate_<ID>[/<well>"
                                  "[_s<field>]] (e.g. /omero/plate_51/A01_s001)")
            plate, well, site = match.groups()
            if well is not None:
                well = well_name(*parse_well(well))
            return _Virtual(int(plate), well, int(site) if site is not None else None)
        match = _CLASS_ID.match(text)
        if not match:
            raise TargetError(f"{value!r} is not a target: write e.g. 'Plate:51', 'Well:7', 'Image:9' or "
                              "'/omero/plate_51/A01'")
        kind, oid = match.group(1).capitalize(), match.group(2)
        if not oid.isdigit():
            raise TargetError(f"{value!r}: the ID must be a whole number")
        return _checked_kind(kind, int(oid), value)
    return _checked_kind(*_kind_and_id(value), value)


def _kind_and_id(obj: Any) -> tuple[str, int]:
    """A BlitzGateway wrapper's or an ``omero.model`` object's kind and ID."""
    kind = getattr(obj, "OMERO_CLASS", None)
    if kind is not None and hasattr(obj, "getId"):  # BlitzObjectWrapper
        return str(kind), int(obj.getId())
    name = type(obj).__name__
    if hasattr(obj, "getId") and hasattr(obj, "isLoaded") and obj.getId() is not None:  # omero.model
        return name[:-1] if name.endswith("I") else name, int(unwrap(obj.getId()))
    raise TargetError(f"not a target: a {name} (give 'Plate:51', a path like '/omero/plate_51/A01', "
                      "or a plate, well or image object)")


def _checked_kind(kind: str, oid: int, given: Any) -> tuple[str, int]:
    if kind not in KINDS:
        raise TargetError(f"{given!r} is {_an(kind)}; files and results go on a Plate, a Well or an Image")
    return kind, oid


def plate_id_of(value: Any) -> int:
    """The plate ID of a plate given as an ID, ``"Plate:51"``, ``/omero/plate_51`` or an
    object; anything else raises :class:`TargetError`."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if value < 1:
            raise TargetError(f"plate IDs are positive, not {value}")
        return int(value)
    parsed = parse(value)
    if isinstance(parsed, _Virtual):
        if parsed.well is not None:
            raise TargetError(f"{value!r} is a well or a field; give its plate, /omero/plate_{parsed.plate_id}")
        return parsed.plate_id
    kind, oid = parsed
    if kind != "Plate":
        raise TargetError(f"expected a plate, got {kind}:{oid}")
    return oid


def split_path(path: str) -> tuple[str, str]:
    """``/omero/plate_51/A01/counts.csv`` -> ``("/omero/plate_51/A01", "counts.csv")``."""
    if not isinstance(path, str) or not path.startswith("/omero/"):
        raise TargetError(f"{path!r}: without a target, give the file as a virtual path such as "
                          "/omero/plate_51/results.json")
    folder, _, name = path.rstrip("/").rpartition("/")
    return folder, name


def resolve(conn, value: Any, *, annotate: bool = False) -> Target:
    """The target on the server, read across the user's groups. With ``annotate``,
    a target the user may not annotate is refused."""
    parsed = parse(value)
    if isinstance(parsed, _Virtual):
        kind, oid, label = _virtual_object(conn, parsed)
    else:
        kind, oid = parsed
        label = f"{kind}:{oid}"
    found = conn.getQueryService().findAllByQuery(Q.OBJECT_DETAILS.format(kind=kind), query_params(id=oid),
                                                  all_groups(conn))
    if not found:
        raise TargetError(_why_missing(conn, kind, oid))
    details = found[0].getDetails()
    permissions = details.getPermissions()
    target = Target(kind, oid, details.getGroup().getId().getValue(), details.getOwner().getId().getValue(),
                    bool(permissions.canAnnotate()), label)
    if annotate and not target.can_annotate:
        whose = "yours" if target.owner_id == conn.getUserId() else \
            f"another user's, in a {group_kind(permissions)} group"
        raise TargetError(f"you have no permission to annotate {label} ({whose})")
    return target


def _virtual_object(conn, path: _Virtual) -> tuple[str, int, str]:
    """The plate, well or image a virtual path names, from the plate's (cached) layout."""
    if path.well is None:
        return "Plate", path.plate_id, f"Plate:{path.plate_id}"
    try:
        layout = load_plate(conn, path.plate_id).layout
    except OmeroInputError as exc:
        raise TargetError(str(exc)) from None
    try:
        well = layout.well(path.well)
    except KeyError:
        raise TargetError(f"plate {path.plate_id} has no well {path.well}") from None
    if path.site is None:
        return "Well", well.id, f"well {well.name} of plate {path.plate_id} (Well:{well.id})"  # type: ignore[return-value]
    images = sorted((run, iid) for (name, site, run), iid in layout.image_ids.items()
                    if name == well.name and site == path.site)
    if not images:
        raise TargetError(f"well {well.name} of plate {path.plate_id} has no field {path.site}")
    if len(images) > 1:
        listed = ", ".join(f"Image:{iid} (run {run})" for run, iid in images)
        raise TargetError(f"field {path.site} of well {well.name} of plate {path.plate_id} was imaged in "
                          f"{len(images)} runs; name the image: {listed}")
    iid = images[0][1]
    return "Image", iid, f"field {path.site} of well {well.name} of plate {path.plate_id} (Image:{iid})"


def _why_missing(conn, kind: str, oid: int) -> str:
    query = conn.getQueryService()
    for other in KINDS + _OTHER_KINDS:
        if other != kind and query.projection(Q.OBJECT_EXISTS.format(kind=other), query_params(id=oid),
                                              all_groups(conn)):
            return f"{kind}:{oid} does not exist: ID {oid} is {_an(other)}, not {_an(kind)}"
    return f"no {kind} with ID {oid} (or you may not read it)"


__all__ = ["KINDS", "Target", "TargetError", "parse", "plate_id_of", "resolve", "split_path"]
