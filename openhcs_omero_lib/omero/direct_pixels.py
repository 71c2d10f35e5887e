"""Planes read straight from a plate's files in the managed repository.

:func:`open_pixels` chooses how a plate's pixels are read. With ``auto`` it finds the
plate's files (:func:`~.repository.find_plate_files`'s two steps), then reads one plane per
channel, spread over the plate's fields, both from its file and through
RawPixelsStore, and compares them byte for byte; only when all of that holds are the
plate's planes read from its files (:class:`DirectPixelSource`). Otherwise, and with
``server``, they come through RawPixelsStore as before. Either way the run computes
on the same pixels: a plane that cannot be read from its file during the run is read
through RawPixelsStore instead, and so is every later one of that process.
"""

from __future__ import annotations

import collections
import io
import sys
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import tifffile

from openhcs_omero_lib.omero.address import ServerAddress
from openhcs_omero_lib.omero.plate import OmeroPlate
from openhcs_omero_lib.omero.repository import (
    DirectReadRefused,
    PlaneKey,
    PlateFiles,
    find_files_under,
    on_a_thread,
    open_inside,
    repository_here,
    start_repository_lookup,
)
from openhcs_omero_lib.omero.repository_settings import RepositorySettings, SettingsError, load_settings
from openhcs_omero_lib.plates.pixels import PixelSource, SourceNotReady, SourceSpec
from openhcs_omero_lib.plates.tiff_plane import read_tiff_plane

if TYPE_CHECKING:
    from openhcs_omero_lib.omero.pixels import OmeroPixelSource

DIRECT_KIND = "omero-direct"
"""The :class:`~..plates.pixels.SourceSpec` kind of :class:`DirectPixelSource`"""

ACCESS_CHOICES = ("auto", "server")
"""``auto``: from the managed repository when the checks pass; ``server``: always RawPixelsStore"""


@dataclass(frozen=True)
class PixelAccess:
    """How a plate's pixels were read, and why."""

    path: str
    """``direct`` (from the managed repository) or ``server`` (RawPixelsStore)"""
    reason: str | None = None
    """Why not direct, when direct reads were tried"""
    verified: int = 0
    """Planes compared byte for byte with RawPixelsStore before reading directly"""

    def note(self) -> str:
        """One line for the run's ``Message``; empty when RawPixelsStore was chosen."""
        if self.path == "direct":
            line = (f"pixels read from the managed repository ({self.verified} plane"
                    f"{'s' if self.verified != 1 else ''} checked against RawPixelsStore)")
            return f"{line}; {self.reason}" if self.reason else line
        return f"pixels read through RawPixelsStore: {self.reason}" if self.reason else ""

    def summary(self) -> dict:
        return {"path": self.path, "reason": self.reason, "verified_planes": self.verified}


class DirectPixelSource(PixelSource):
    """Planes of an OMERO plate read from its checked files (:class:`~.repository.PlateFiles`),
    each opened again only inside the repository's root. A plane that fails to read
    comes through RawPixelsStore, and so does every later one: the source then says
    why in :attr:`fell_back` (and, in a worker process, on stderr)."""

    read_ahead = False
    """Reading a file is mostly Python work (parsing the TIFF) and copying pages while
    holding the interpreter lock: a reading thread would take turns with the computing
    one rather than overlap it, as for a local folder."""

    def __init__(self, plate: OmeroPlate, root: str, files: dict[PlaneKey, str], *, conn=None,
                 address: ServerAddress | None = None, key: str | None = None):
        self.plate = plate
        self.layout = plate.layout
        self.root = root
        self.files = files
        self._conn = conn
        if conn is not None:
            from openhcs_omero_lib.omero.connection import address_of, session_key

            address, key = address or address_of(conn), key or session_key(conn)
        self._address, self._key = address, key
        self._server: OmeroPixelSource | None = None
        self._folders: dict[str, str] = {}  # real paths of the folders resolved so far
        self.fell_back: str | None = None

    @classmethod
    def from_spec(cls, spec: SourceSpec) -> DirectPixelSource:
        params = spec.params
        address = ServerAddress(**params["address"])
        return cls(params["plate"], params["root"], params["files"], address=address, key=spec.secret)

    def spec(self) -> SourceSpec:
        address = self._address
        return SourceSpec(DIRECT_KIND, {"address": {"host": address.host, "port": address.port,
                                                    "router": address.router},
                                        "plate": self.plate, "root": self.root, "files": self.files},
                          secret=self._key)

    def read_file(self, well: str, site: int, channel: int, z: int = 1, t: int = 1) -> np.ndarray:
        """One plane from its file, never through the server."""
        relative = self.files.get((well, site, channel, z, t))
        if relative is None:
            raise FileNotFoundError(f"plate {self.layout.plate_id} has no file for well {well} field {site} "
                                    f"channel {channel} z {z} t {t}")
        raw = io.FileIO(open_inside(self.root, relative, self._folders), "r")
        raw.name = relative  # tifffile wants a name, not the descriptor's number
        with io.BufferedReader(raw) as handle:
            try:
                return read_tiff_plane(handle, self.layout.plane_shape, self.layout.dtype)
            except (ValueError, OSError, tifffile.TiffFileError) as exc:
                raise DirectReadRefused(f"{relative}: {exc}") from None

    def read_plane(self, well: str, site: int, channel: int, z: int = 1, t: int = 1,
                   run: int | None = None) -> np.ndarray:
        if self.fell_back is None:
            try:
                return self.read_file(well, site, channel, z, t)
            except Exception as exc:  # whatever keeps a file from being read, the server still can
                self._fall_back(str(exc) if isinstance(exc, DirectReadRefused) else f"{type(exc).__name__}: {exc}")
        return self._server_source().read_plane(well, site, channel, z, t, run)

    def _fall_back(self, why: str) -> None:
        self.fell_back = why
        if self._conn is None:  # a worker: its stderr is the job's
            print(f"openhcs-omero: plate {self.layout.plate_id}: reading through RawPixelsStore from now on: {why}",
                  file=sys.stderr, flush=True)

    def _server_source(self) -> OmeroPixelSource:
        # Imported here: a worker that reads only files never loads omero-py's client.
        from openhcs_omero_lib.omero.connection import join_session
        from openhcs_omero_lib.omero.pixels import OmeroPixelSource

        if self._server is None:
            if self._conn is not None:
                self._server = OmeroPixelSource(self._conn, self.plate)
            else:
                client = join_session(self._address, self._key)  # type: ignore[arg-type]
                self._server = OmeroPixelSource(None, self.plate, client=client, address=self._address,
                                                key=self._key)
        return self._server

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()


def access_after_run(source: PixelSource, access: PixelAccess) -> PixelAccess:
    """How a finished run read: ``access``, with the reason where some of this
    process's reads of a plate's files fell back to RawPixelsStore."""
    if isinstance(source, DirectPixelSource) and source.fell_back:  # this process's reads only
        return PixelAccess("direct", f"some planes were read through RawPixelsStore: {source.fell_back}",
                           access.verified)
    return access


def _verification_planes(plate: OmeroPlate) -> list[tuple]:
    """One plane per channel, each of another field spread over the plate (and the
    last z where there are several), so that a file mapped to the wrong well, field
    or channel is likely among them."""
    layout = plate.layout
    units = list(layout.units())
    count = len(layout.channels)
    planes = []
    for k in range(count):
        unit = units[((2 * k + 1) * len(units)) // (2 * count)]
        z = layout.z_planes if k % 2 else 1
        planes.append((unit, k + 1, z))
    return planes


def _server_planes(server: OmeroPixelSource) -> list[np.ndarray]:
    """:func:`_verification_planes` as RawPixelsStore returns them."""
    return [server.read_plane(unit.well, unit.site, channel, z, unit.timepoint, unit.run)
            for unit, channel, z in _verification_planes(server.plate)]


def verify(direct: DirectPixelSource, server_planes: list[np.ndarray]) -> int:
    """Compare :func:`_verification_planes` read from their files with
    ``server_planes`` (:func:`_server_planes`), byte for byte; returns how many, or
    raises :class:`~.repository.DirectReadRefused` at the first difference."""
    planes = _verification_planes(direct.plate)
    for (unit, channel, z), theirs in zip(planes, server_planes, strict=True):
        where = f"well {unit.well} field {unit.site} channel {channel} z {z} t {unit.timepoint}"
        mine = direct.read_file(unit.well, unit.site, channel, z, unit.timepoint)
        if mine.dtype != theirs.dtype or mine.shape != theirs.shape or mine.tobytes() != theirs.tobytes():
            relative = direct.files[(unit.well, unit.site, channel, z, unit.timepoint)]
            raise DirectReadRefused(f"the file of {where} ({relative}) differs from what RawPixelsStore returns")
    return len(planes)


def look_ahead(conn, access: str = "auto") -> None:
    """Where direct reads may be tried, start finding the server's managed repository
    now (:func:`~.repository.start_repository_lookup`): a run calls this before it
    loads its plates, whose round-trips then cover the lookup's."""
    if access != "auto":
        return
    try:
        if not load_settings().direct_reads:
            return
    except SettingsError:
        return  # open_pixels says what is wrong with the settings
    start_repository_lookup(conn)


@dataclass
class _Lookups:
    """A request's plates whose files :class:`ChecksAhead` looks up: the one begun
    (and not yet taken by :func:`open_pixels`), then those still to come, in order."""

    begun: tuple[OmeroPlate, Future] | None = None
    waiting: collections.deque = field(default_factory=collections.deque)


_lookups: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""conn -> :class:`_Lookups` of its latest request; nothing in them refers to the
connection, so that a connection's entry goes with it"""
_lookups_lock = threading.Lock()


class ChecksAhead:
    """The first half of :func:`open_pixels`'s checks of the plates a run prepares
    (where the repository is, the plate's files, each file checked), begun on a thread
    of their own: the first plate's as soon as it is loaded, so that they make their
    round-trips while the run's other checks make theirs, and each next plate's when
    :func:`open_pixels` takes the one before (while that plate computes). Pixels are
    compared only in :func:`open_pixels`, once the request has passed every check: a
    refused request reads none. Used as a context manager, an error inside the
    ``with`` cancels them (:meth:`cancel`)."""

    def __init__(self, conn, access: str = "auto"):
        self._conn = conn
        self._lookups: _Lookups | None = None
        if access == "auto":
            look_ahead(conn, access)
            self._lookups = _Lookups()
            with _lookups_lock:
                _lookups[conn] = self._lookups  # a new request: an earlier one's are dropped

    def start(self, plate: OmeroPlate) -> None:
        lookups = self._lookups
        if lookups is None:
            return
        with _lookups_lock:
            if lookups.begun is None and not lookups.waiting:
                lookups.begun = (plate, _begin(self._conn, plate))
            else:
                lookups.waiting.append(plate)

    def cancel(self) -> None:
        """Forget the lookups, waiting for the one under way."""
        lookups = self._lookups
        if lookups is None:
            return
        with _lookups_lock:
            begun, lookups.begun = lookups.begun, None
            lookups.waiting.clear()
            if _lookups.get(self._conn) is lookups:
                del _lookups[self._conn]
        if begun is not None:
            wait([begun[1]])

    def __enter__(self) -> ChecksAhead:
        return self

    def __exit__(self, kind, *_) -> None:
        if kind is not None:
            self.cancel()


def _begin(conn, plate: OmeroPlate) -> Future:
    """:func:`_files_ahead` on a thread of its own."""
    return on_a_thread(lambda: _files_ahead(conn, plate), "openhcs-checks")


def _files_ahead(conn, plate: OmeroPlate) -> PlateFiles | PixelAccess:
    """The plate's checked files, or how it is read instead and why: whatever goes
    wrong is an answer, not an exception (one kept would keep its frames, and the
    connection in them)."""
    try:
        return find_files_under(conn, plate, repository_here(conn, plate, load_settings()))
    except BaseException as exc:
        return _refused(exc)


def _refused(exc: BaseException) -> PixelAccess:
    if isinstance(exc, (DirectReadRefused, SettingsError)):
        return PixelAccess("server", str(exc))
    # anything unexpected is a reason to read as before, not to fail
    reason = getattr(exc, "message", None) or str(exc)
    return PixelAccess("server", f"{type(exc).__name__}: {reason}".splitlines()[0])


def _take_started(conn, plate: OmeroPlate) -> Future | None:
    """The lookup :class:`ChecksAhead` began for this very plate object, if any; the
    next plate's lookup begins now. A plate still waiting is taken out of the queue
    (it is looked up by the caller)."""
    with _lookups_lock:
        lookups = _lookups.get(conn)
        if lookups is None:
            return None
        taken = None
        if lookups.begun is not None and lookups.begun[0] is plate:
            taken, lookups.begun = lookups.begun[1], None
        else:
            lookups.waiting = collections.deque(p for p in lookups.waiting if p is not plate)
        if lookups.begun is None and lookups.waiting:
            following = lookups.waiting.popleft()
            lookups.begun = (following, _begin(conn, following))
    return taken


def open_pixels(conn, plate: OmeroPlate, access: str = "auto",
                settings: RepositorySettings | None = None) -> tuple[PixelSource, PixelAccess]:
    """The plate's pixel source and how it reads. ``access`` is ``auto`` or ``server``
    (:data:`ACCESS_CHOICES`); ``settings`` default to :func:`~.repository_settings.load_settings`.
    Never raises for a plate whose files cannot be used: that plate reads through
    RawPixelsStore, and :attr:`PixelAccess.reason` says why. A plate whose files
    :class:`ChecksAhead` looked up is not looked up again."""
    if access not in ACCESS_CHOICES:
        raise ValueError(f"pixel access must be one of {', '.join(ACCESS_CHOICES)}, not {access!r}")
    from openhcs_omero_lib.omero.pixels import OmeroPixelSource

    server = OmeroPixelSource(conn, plate)
    if access == "server":
        return server, PixelAccess("server")
    started = _take_started(conn, plate) if settings is None else None
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="openhcs-verify") as pool:
            if started is not None:
                found = started.result()
                if isinstance(found, PixelAccess):
                    return server, found
                theirs = _server_planes(server)
            else:
                settings = settings if settings is not None else load_settings()
                root = repository_here(conn, plate, settings)
                # Not before the repository is known to be here (elsewhere, nothing is
                # read twice); then the server's copies of the planes to compare are
                # read while the plate's files are looked up and checked.
                looking = pool.submit(find_files_under, conn, plate, root)
                theirs = _server_planes(server)
                found = looking.result()
            direct = DirectPixelSource(plate, found.root, found.files, conn=conn)
            verified = verify(direct, theirs)
    except SourceNotReady:
        server.close()
        raise
    except Exception as exc:
        return server, _refused(exc)  # its store stays open: the run reads through it
    server.close(wait=False)  # its store served the checks; the run opens another only if it needs one
    return direct, PixelAccess("direct", verified=verified)


__all__ = ["ACCESS_CHOICES", "DIRECT_KIND", "ChecksAhead", "DirectPixelSource", "PixelAccess", "access_after_run",
           "look_ahead", "open_pixels", "verify"]
