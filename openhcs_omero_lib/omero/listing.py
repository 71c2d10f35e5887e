"""Listing what a user can run on."""

from __future__ import annotations

from dataclasses import dataclass

from omero.rtypes import unwrap

from openhcs_omero_lib.omero import queries as Q
from openhcs_omero_lib.omero.plate import all_groups


@dataclass(frozen=True)
class PlateSummary:
    id: int
    name: str
    wells: int
    fields: int
    channels: int
    owner: str
    group: str


def list_plates(conn) -> list[PlateSummary]:
    """Every plate the user can read, in every group, in one query."""
    rows = conn.getQueryService().projection(Q.PLATE_LIST, None, all_groups(conn))
    out = []
    for row in rows:
        pid, name, wells, samples, channels, owner, group = (unwrap(v) for v in row)
        out.append(PlateSummary(pid, name or "", wells or 0, (samples // wells) if wells else 0,
                                channels or 0, owner or "", group or ""))
    return out
