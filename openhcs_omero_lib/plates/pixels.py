"""Pixel sources: where a plate's planes come from (a local folder, an OMERO server).

The executor reads planes only through :class:`PixelSource`. A worker process gets a
:class:`SourceSpec` (plain data: a kind and its parameters) and opens its own source
with :func:`open_source`; the kinds are a fixed table of this package's openers, so
nothing received by a worker names code to run.
"""

from __future__ import annotations

import collections
import importlib
import itertools
from abc import ABC, abstractmethod
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from openhcs_omero_lib.plates.layout import PlateLayout, SiteUnit

# kind -> "module:function" of an opener taking the spec's params as keywords.
_OPENERS: dict[str, str] = {
    "imagexpress": "openhcs_omero_lib.plates.imagexpress:ImageXpressSource.from_spec",
    "omero": "openhcs_omero_lib.omero.pixels:OmeroPixelSource.from_spec",
    "omero-direct": "openhcs_omero_lib.omero.direct_pixels:DirectPixelSource.from_spec",
}


@dataclass(frozen=True)
class SourceSpec:
    """What a worker needs to open its own pixel source. ``secret`` holds a session
    key where one is needed; it is kept out of ``repr`` so it never reaches a log."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    secret: str | None = field(default=None, repr=False)


class SourceNotReady(Exception):
    """The source cannot serve this plate's planes yet (an OMERO server still building
    an image's pyramid): every unit would fail alike, so a run stops with this one
    reason instead of recording an error per unit. The message says what to do."""


class PixelSource(ABC):
    """Reads 2-D planes of one plate; sources are context managers."""

    layout: PlateLayout

    read_ahead: bool = True
    """Whether reading the next units on a background thread while one computes pays
    off: it does where a read waits (on a server); where it is CPU work in Python
    (parsing local files), handing the interpreter lock back and forth between the
    reading thread and the computing one costs more than it hides."""

    fork_safe: bool = False
    """Whether worker processes reading this source may be forked from a process that
    runs no other thread (see :mod:`~.executor`): true for sources whose workers only
    read local files, false where a worker opens a client with threads of its own."""

    @abstractmethod
    def read_plane(self, well: str, site: int, channel: int, z: int = 1, t: int = 1,
                   run: int | None = None) -> np.ndarray:
        """One plane as a 2-D array in the plate's dtype (native byte order); ``run``
        names the acquisition run on a plate that has runs."""

    @abstractmethod
    def spec(self) -> SourceSpec:
        """How another process opens the same source."""

    def read_stack(self, unit: SiteUnit, channel: int) -> np.ndarray:
        """All z planes of one channel of a unit, shape ``(z, y, x)``."""
        # Only a plate with runs passes one: sources of plates without take no ``run``.
        run = {"run": unit.run} if unit.run is not None else {}
        planes = [self.read_plane(unit.well, unit.site, channel, z, unit.timepoint, **run)
                  for z in range(1, self.layout.z_planes + 1)]
        return planes[0][np.newaxis] if len(planes) == 1 else np.stack(planes)  # one plane: no copy

    def read_channels(self, unit: SiteUnit, channels: Sequence[int]) -> dict[int, Any]:
        """:meth:`read_stack` of each channel, in order; a channel that fails maps to
        its exception and ends the reading."""
        stacks: dict[int, Any] = {}
        for channel in channels:
            try:
                stacks[channel] = self.read_stack(unit, channel)
            except Exception as exc:  # the unit's failure, raised when the pipeline asks for it
                stacks[channel] = exc
                break
        return stacks

    def sibling(self) -> PixelSource | None:
        """A second reader of the same plate, usable from another thread while this
        one reads, sharing what is costly to open; None where one reader is all it
        takes (a source whose reads do not wait on a server). Closing it leaves this
        source open."""
        return None

    def close(self) -> None:  # noqa: B027 (optional: a source without resources keeps this)
        """Release server or file resources; safe to call twice."""

    def __enter__(self) -> PixelSource:
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


_END = object()

READ_LANES = 2
"""Readers a :class:`UnitPrefetcher` keeps busy when its source has siblings: while a
unit computes, this many next units are fetched at once, so a server's latency is
paid once per this many units."""


class UnitPrefetcher:
    r"""Reads each unit's channels on background threads, ahead of the caller, so
    that fetching the next units overlaps computing the current one.

    Each reading lane is one thread with a source of its own (the source given, then
    its :meth:`~PixelSource.sibling`\ s); units go to the lanes in turn. Every read of
    a lane's source happens on that lane's thread, in unit order: a source need not be
    thread-safe (an OMERO source switches images on one stateful store), and at most
    one unit per lane, plus the one computing, is held at a time. A source that is not
    worth reading ahead (:attr:`PixelSource.read_ahead`) is read in the caller's
    thread, a unit at a time."""

    def __init__(self, source: PixelSource, channels: Sequence[int], lanes: int = READ_LANES):
        self.source = source
        self.channels = list(channels)
        self._sources = [source]
        if not source.read_ahead:
            lanes = 0  # read in the caller's thread, when the unit is asked for
        while 0 < len(self._sources) < lanes:
            twin = source.sibling()
            if twin is None:
                break
            self._sources.append(twin)
        self._pools = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"prefetch-{lane}")
                       for lane in range(len(self._sources) if lanes else 0)]

    @property
    def lanes(self) -> int:
        return len(self._sources)

    def readers(self, units: Iterable[SiteUnit]) -> Iterator[Callable[[int], np.ndarray]]:
        """One reader (channel -> ``(z, y, x)`` stack) per unit, in order. ``units``
        may be a lazy iterator: it is advanced as many units ahead as there are lanes."""
        if not self._pools:
            for unit in units:
                yield self._reader(0, unit, self.source.read_channels(unit, self.channels))
            return
        upcoming = iter(units)
        ahead: collections.deque[tuple[int, SiteUnit, Future]] = collections.deque()
        turns = itertools.cycle(range(self.lanes))
        last: list = [None, 0]  # (well, site, run), lane

        def fetch(unit: SiteUnit) -> None:
            # A field's timepoints stay on one lane: its store is already on that image.
            if unit.image_key != last[0]:
                last[:] = [unit.image_key, next(turns)]
            lane = last[1]
            source = self._sources[lane]
            ahead.append((lane, unit, self._pools[lane].submit(source.read_channels, unit, self.channels)))

        for unit in itertools.islice(upcoming, self.lanes):
            fetch(unit)
        while ahead:
            lane, unit, planes = ahead.popleft()
            following = next(upcoming, _END)
            if following is not _END:
                fetch(following)  # type: ignore[arg-type]
            yield self._reader(lane, unit, planes.result())

    def _reader(self, lane: int, unit: SiteUnit, planes: dict[int, Any]) -> Callable[[int], np.ndarray]:
        def read(channel: int) -> np.ndarray:
            value = planes.pop(channel, None)  # each channel is read once per unit
            if value is None and not self._pools:
                value = self.source.read_stack(unit, channel)
            elif value is None:  # not prefetched: still read on the lane's own thread
                value = self._pools[lane].submit(self._sources[lane].read_stack, unit, channel).result()
            if isinstance(value, Exception):
                raise value
            return value
        return read

    def close(self, wait: bool = True) -> None:
        for pool in self._pools:
            pool.shutdown(wait=wait, cancel_futures=True)
        for twin in self._sources[1:]:
            twin.close()
        del self._sources[1:]

    def __enter__(self) -> UnitPrefetcher:
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        # On Ctrl-C or a cancel, do not wait for a read in flight. Otherwise (the end,
        # or a source that is not ready) wait: a lane still reading would open a
        # store after its source was closed, and leave it open on the server.
        self.close(wait=exc_type is None or not issubclass(exc_type, KeyboardInterrupt))
