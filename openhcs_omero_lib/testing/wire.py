"""How the stand-in shapes what it sends: unloaded shells and references of stored objects,
query parameters, and the caller's group from the call context. Shared by every service
module; imports none of them."""

from __future__ import annotations

import copy
from typing import Any

import omero
from omero.rtypes import unwrap


def ctx_group(current) -> int | None:
    value = (current.ctx or {}).get("omero.group") if current else None
    return int(value) if value not in (None, "") else None


def param(params, key):
    if params is None or key not in params.map:
        raise omero.ApiUsageException(message=f"query parameter :{key} not set")
    return unwrap(params.map[key])


def shell(obj: Any) -> Any:
    """A copy of ``obj`` with every collection unloaded, as a query returns an
    object whose collections it did not fetch."""
    new = copy.copy(obj)
    for attr in list(vars(new)):
        if attr.endswith("Seq"):
            setattr(new, attr, [])
            setattr(new, attr[:-3] + "Loaded", False)
    new._details = copy.copy(obj._details)
    return new


def fill(parent: Any, seq_attr: str, children: list[Any]) -> None:
    setattr(parent, seq_attr, list(children))
    setattr(parent, seq_attr[:-3] + "Loaded", True)


def column(column: Any, values: list) -> Any:
    """A column like ``column`` (name, description, string width) holding ``values``."""
    out = copy.copy(column)
    out.values = values
    return out


def ref(obj: Any) -> Any:
    """An unloaded reference to ``obj``."""
    return type(obj)(obj.getId().getValue(), False)
