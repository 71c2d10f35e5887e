"""Plate layouts from OMERO, in at most three queries, cached until the plate changes."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import omero
import omero.sys
from omero.rtypes import unwrap

from openhcs_omero_lib.omero import queries as Q
from openhcs_omero_lib.omero.layout_rules import FieldRow, LayoutRules, PlateSummary
from openhcs_omero_lib.plates.layout import PlateLayout, Run


class OmeroInputError(ValueError):
    """An ID or choice that does not name what it should; one clear line."""


@dataclass(frozen=True)
class OmeroPlate:
    """A plate's layout with what reading and annotating it needs."""

    layout: PlateLayout
    group_id: int
    pixels_ids: dict[tuple[str, int, int | None], int] = field(compare=False)
    fingerprint: tuple = ()
    all_runs: tuple[Run, ...] = ()
    """Every acquisition run of the plate; the layout holds the chosen ones"""
    all_image_ids: tuple[int, ...] = field(default=(), compare=False)
    """Every image of the plate, in any run: a re-run replaces its results on all"""

    @property
    def id(self) -> int:
        return self.layout.plate_id  # type: ignore[return-value]


def query_params(**values) -> omero.sys.ParametersI:
    params = omero.sys.ParametersI()
    for key, value in values.items():
        if isinstance(value, (list, tuple)):
            params.addLongs(key, list(value))
        elif isinstance(value, str):
            params.add(key, omero.rtypes.rstring(value))
        else:
            params.addLong(key, value)
    return params


def all_groups(conn) -> dict:
    """Service options for reading across every group the user is in."""
    opts = conn.SERVICE_OPTS.copy()
    opts.setOmeroGroup(-1)
    return opts


def in_group(conn, group_id: int) -> dict:
    """Service options for working in one group (writes must name the object's group)."""
    opts = conn.SERVICE_OPTS.copy()
    opts.setOmeroGroup(group_id)
    return opts


def describe_missing(conn, kind: str, object_id: int) -> str:
    """Why ``kind`` ``object_id`` was not found: another kind, or not readable."""
    query = conn.getQueryService()
    for other in ("Plate", "Screen", "Dataset", "Project", "Image"):
        if other == kind:
            continue
        if query.projection(Q.OBJECT_EXISTS.format(kind=other), query_params(id=object_id), all_groups(conn)):
            return f"ID {object_id} is a {other}, not a {kind}"
    return f"no {kind} with ID {object_id} (or you may not read it)"


def plate_ids_for(conn, data_type: str, ids: list[int]) -> list[int]:
    """Plate IDs for the script dialog's ``Data_Type`` and ``IDs``: plates as given,
    screens expanded to their plates. Raises :class:`OmeroInputError`."""
    if not ids:
        raise OmeroInputError("no IDs given")
    query = conn.getQueryService()
    plates: list[int] = []
    for oid in ids:
        if data_type == "Plate":
            if not query.projection(Q.OBJECT_EXISTS.format(kind="Plate"), query_params(id=oid), all_groups(conn)):
                raise OmeroInputError(describe_missing(conn, "Plate", oid))
            plates.append(oid)
        elif data_type == "Screen":
            if not query.projection(Q.OBJECT_EXISTS.format(kind="Screen"), query_params(id=oid), all_groups(conn)):
                raise OmeroInputError(describe_missing(conn, "Screen", oid))
            rows = query.projection(Q.SCREEN_PLATES, query_params(id=oid), all_groups(conn))
            if not rows:
                raise OmeroInputError(f"screen {oid} has no plates")
            plates.extend(unwrap(r[0]) for r in rows)
        else:
            raise OmeroInputError(f"Data_Type must be Plate or Screen, not {data_type}")
    return list(dict.fromkeys(plates))


class PlateCache:
    """Layouts by (server, plate, handler, chosen runs); an entry is used only while
    the plate's fingerprint (its, its fields' and its runs' last modification, field
    count and indices) is unchanged."""

    def __init__(self):
        self._entries: dict[tuple, OmeroPlate] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple, fingerprint: tuple) -> OmeroPlate | None:
        with self._lock:
            entry = self._entries.get(key)
        return entry if entry is not None and entry.fingerprint == fingerprint else None

    def put(self, key: tuple, plate: OmeroPlate) -> None:
        with self._lock:
            self._entries[key] = plate

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


CACHE = PlateCache()


def load_plate(conn, plate_id: int, handler: LayoutRules | None = None,
               cache: PlateCache | None = CACHE, runs: frozenset[int] | None = None) -> OmeroPlate:
    """The layout of ``plate_id``, looked up across the user's groups; with ``runs``
    (PlateAcquisition IDs), of the fields of those runs only (a plate with none of
    them has no units).

    Costs one query when cached and current, three otherwise."""
    handler = handler or LayoutRules()
    query = conn.getQueryService()
    opts = all_groups(conn)
    rows = query.projection(Q.PLATE_FINGERPRINT, query_params(id=plate_id), opts)
    if not rows:
        raise OmeroInputError(describe_missing(conn, "Plate", plate_id))
    fingerprint = tuple(unwrap(v) for v in rows[0])
    group_id = fingerprint[1]
    summary = PlateSummary(plate_id, *fingerprint[5:8])
    runs = frozenset(runs) if runs is not None else None
    key = (conn.c.getProperty("omero.host"), conn.c.getProperty("omero.port"), plate_id, type(handler), runs)
    if cache is not None:
        cached = cache.get(key, fingerprint)
        if cached is not None:
            return cached
    fields = [FieldRow(*(unwrap(v) for v in row))
              for row in query.projection(Q.PLATE_FIELDS, query_params(id=plate_id), opts)]
    first_pixels = next((f.pixels_id for f in fields if f.pixels_id is not None), None)
    if first_pixels is None:
        raise OmeroInputError(f"plate {plate_id} ({handler.plate_name(summary)}) has no images")
    found = query.findAllByQuery(Q.PIXELS_CHANNELS, query_params(id=first_pixels), opts)
    if not found:
        raise OmeroInputError(f"plate {plate_id}: the pixels of its first image ({first_pixels}) "
                              "cannot be read")
    pixels = found[0]
    try:
        layout, pixels_ids = handler.build_layout(summary, fields, pixels, pixels.copyChannels(), runs)
    except ValueError as exc:
        raise OmeroInputError(str(exc)) from None
    all_runs = {f.run_id: handler.run_name(f.run_id, f.run_name) for f in fields if f.run_id is not None}
    result = OmeroPlate(layout, group_id, pixels_ids, fingerprint,
                        tuple(Run(rid, name) for rid, name in sorted(all_runs.items())),
                        tuple(sorted({f.image_id for f in fields if f.image_id is not None})))
    if cache is not None:
        cache.put(key, result)
    return result
