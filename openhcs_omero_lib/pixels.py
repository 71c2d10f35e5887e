"""Pixel sources: where a plate's planes come from (a local folder, an OMERO server).

The executor reads planes only through :class:`PixelSource`. A worker process gets a
:class:`SourceSpec` (plain data: a kind and its parameters) and opens its own source
with :func:`open_source`; the kinds are a fixed table of this package's openers, so
nothing received by a worker names code to run.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .layout import PlateLayout, SiteUnit

# kind -> "module:function" of an opener taking the spec's params as keywords.
_OPENERS: dict[str, str] = {
    "imagexpress": "openhcs_omero_lib.imagexpress:ImageXpressSource.from_spec",
    "omero": "openhcs_omero_lib.omero.pixels:OmeroPixelSource.from_spec",
}


@dataclass(frozen=True)
class SourceSpec:
    """What a worker needs to open its own pixel source. ``secret`` holds a session
    key where one is needed; it is kept out of ``repr`` so it never reaches a log."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    secret: str | None = field(default=None, repr=False)


class PixelSource(ABC):
    """Reads 2-D planes of one plate; sources are context managers."""

    layout: PlateLayout

    @abstractmethod
    def read_plane(self, well: str, site: int, channel: int, z: int = 1, t: int = 1) -> np.ndarray:
        """One plane as a 2-D array in the plate's dtype (native byte order)."""

    @abstractmethod
    def spec(self) -> SourceSpec:
        """How another process opens the same source."""

    def read_stack(self, unit: SiteUnit, channel: int) -> np.ndarray:
        """All z planes of one channel of a unit, shape ``(z, y, x)``."""
        planes = [self.read_plane(unit.well, unit.site, channel, z, unit.timepoint)
                  for z in range(1, self.layout.z_planes + 1)]
        return np.stack(planes)

    def close(self) -> None:
        """Release server or file resources; safe to call twice."""

    def __enter__(self) -> "PixelSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_source(spec: SourceSpec) -> PixelSource:
    """Open the source a :class:`SourceSpec` describes (in a worker, usually)."""
    try:
        target = _OPENERS[spec.kind]
    except KeyError:
        raise ValueError(f"unknown pixel source kind {spec.kind!r}; known: {sorted(_OPENERS)}") from None
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    opener: Callable[..., PixelSource] = obj
    return opener(spec)
