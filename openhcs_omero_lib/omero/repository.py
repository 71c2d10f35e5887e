"""A plate's original files in the server's managed repository, found and opened safely.

Where a script runs beside the server's disk, a plate imported from ImageXpress
(MetaXpress) files can be read from those files instead of through RawPixelsStore.
This module finds them and decides whether they may be used; nothing here trusts a
path it did not check:

- paths come only from the server, from one permission-checked query of the user's
  own session for the plate's fileset (:data:`~.queries.PLATE_FILESET_FILES`), and the
  repository's root from the server's repository descriptions (never from a script
  input; where the root is on this machine is the administrator's setting,
  :mod:`.repository_settings`);
- every file must resolve, symbolic links followed, to a regular file inside the
  repository's root, be readable by this process, and have the size the server
  recorded; every plane of the layout must have its file, by the same naming rules as
  a local ImageXpress folder (:func:`~..plates.imagexpress.index_files`).

Anything else raises :class:`DirectReadRefused` with one line saying why, and the
plate is read through RawPixelsStore.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
import weakref
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable

from omero.rtypes import unwrap

from openhcs_omero_lib.omero import queries as Q
from openhcs_omero_lib.omero.plate import OmeroPlate, query_params
from openhcs_omero_lib.omero.repository_settings import RepositorySettings
from openhcs_omero_lib.plates.imagexpress import index_files

PlaneKey = tuple[str, int, int, int, int]
"""(well, site, channel, z, t), numbered from 1 as the layout numbers them"""


class DirectReadRefused(Exception):
    """The plate's files cannot be read directly; the message is one line saying why."""


@dataclass(frozen=True)
class ManagedRepository:
    uuid: str
    root: str
    """As the server reports it (``omero fs repos``): the description's path and name"""


@dataclass(frozen=True)
class RepoFile:
    fileset_id: int
    fileset_images: int
    path: str
    name: str
    size: int | None


@dataclass(frozen=True)
class PlateFiles:
    """Every plane's file, checked: ``files`` maps a plane to its path relative to
    ``root``, the repository's real path on this machine."""

    root: str
    files: dict[PlaneKey, str]


def managed_repository(conn) -> ManagedRepository | None:
    """The managed repository among the server's repositories, as omero-py finds it
    (``client.getManagedRepository``, ``omero fs repos``): the one whose proxy is a
    ManagedRepository. Its root is its description's path and name (omero-blitz
    ``AbstractRepositoryI``: the folder's parent with a final ``/``, and its name)."""
    import Ice
    import omero.grid

    repos = conn.c.sf.sharedResources().repositories()
    # checkedCast's question (ice_isA), asked of every repository at once: one
    # round-trip to the server instead of one per repository in turn.
    managed_type = omero.grid.ManagedRepositoryPrx.ice_staticId()
    asked = []
    for description, proxy in zip(repos.descriptions, repos.proxies):
        if proxy is None:
            continue
        try:
            asked.append((description, proxy, proxy.begin_ice_isA(managed_type)))
        except Ice.LocalException:  # a repository that cannot be asked: as the server skips it
            continue
    found = None
    for description, proxy, call in asked:
        try:
            managed = proxy.end_ice_isA(call)
        except Ice.LocalException:  # a repository that is down: as the server skips it
            continue
        if managed and found is None:
            found = ManagedRepository(unwrap(description.getHash()) or "",
                                      (unwrap(description.getPath()) or "") + (unwrap(description.getName()) or ""))
    return found


_lookups: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_lookups_lock = threading.Lock()


def on_a_thread(work: Callable[[], Any], name: str) -> Future:
    """``work()`` on a daemon thread of its own: its answer, or what it raised, comes
    in the returned future (a lookup whose caller may be gone by then keeps nobody
    waiting at exit)."""
    future: Future = Future()

    def run() -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(work())
            except BaseException as exc:  # raised to whoever waits for it
                future.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


def start_repository_lookup(conn) -> Future:
    """:func:`managed_repository` on a thread of its own, once per connection: a run
    starts it while it loads the plates, and finds the answer waiting when it checks
    their files. A lookup that failed is asked again next time."""
    with _lookups_lock:
        future = _lookups.get(conn)
        if future is None:
            future = _lookups[conn] = on_a_thread(lambda: managed_repository(conn), "openhcs-repository")
    return future


def _repository_of(conn) -> ManagedRepository | None:
    future = start_repository_lookup(conn)
    try:
        return future.result()
    except BaseException:
        with _lookups_lock:
            if _lookups.get(conn) is future:
                del _lookups[conn]
        raise


def plate_files(conn, plate: OmeroPlate) -> list[RepoFile]:
    """The original files of the plate's filesets, in one query."""
    rows = conn.getQueryService().projection(Q.PLATE_FILESET_FILES, query_params(id=plate.id),
                                             {"omero.group": str(plate.group_id)})
    # Each value's own field: omero.rtypes.unwrap's checks, on every value of a plate of
    # thousands of files, cost more than the query's round-trip.
    return [RepoFile(*(None if v is None else v.val for v in row)) for row in rows]


def relative_path(path: str | None, name: str | None) -> str:
    """An original file's path within its repository, refusing what cannot be one:
    an absolute path, a ``..``, an empty name or one holding a ``/``."""
    path, name = path or "", name or ""
    if not name or "/" in name or name in (".", "..") or "\0" in path + name:
        raise DirectReadRefused(f"the server lists a file named {name!r}")
    if path.startswith("/") or ".." in path.split("/"):
        raise DirectReadRefused(f"the server lists a file at {path + name!r}, outside its repository")
    return path + name if (not path or path.endswith("/")) else f"{path}/{name}"


_CHECKS_OPENED = sys.platform.startswith("linux")
"""Whether an opened file's own path can be read back (``/proc/self/fd``)"""


def resolve_inside(root: str, relative: str, folders: dict[str, str] | None = None) -> str:
    """The real path of ``relative`` under ``root`` (a real path), symbolic links
    followed; refused when it ends outside ``root``. ``folders`` keeps the real paths
    of folders already resolved, where :func:`open_inside` checks what it opened (a
    folder turned into a link since is caught there)."""
    folder, _, name = relative.rpartition("/")
    real_folder = folders.get(folder) if folders is not None and _CHECKS_OPENED else None
    if real_folder is None:
        real_folder = os.path.realpath(os.path.join(root, folder))
        if folders is not None:
            folders[folder] = real_folder
    real = os.path.join(real_folder, name)
    if os.path.islink(real):
        real = os.path.realpath(real)
    # Both are real paths (absolute, normalised, no links): inside is below, by name.
    if not real.startswith(root if root.endswith("/") else root + "/"):
        raise DirectReadRefused(f"{relative} leads outside the repository ({real})")
    return real


def open_inside(root: str, relative: str, folders: dict[str, str] | None = None) -> int:
    """A file descriptor of the regular file ``relative`` under ``root``, opened only
    after its real path was checked (:func:`resolve_inside`) and checked again once
    open, so that a link swapped in between is caught. The caller closes it."""
    return _open_regular(root, relative, folders)[0]


def _open_regular(root: str, relative: str, folders: dict[str, str] | None) -> tuple[int, os.stat_result]:
    """:func:`open_inside`, with the open file's status."""
    real = resolve_inside(root, relative, folders)
    try:
        # not following a last link (there is none in a real path), not blocking on a FIFO
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise DirectReadRefused(f"{relative} cannot be opened ({exc.strerror})") from None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise DirectReadRefused(f"{relative} is not a regular file")
        if _CHECKS_OPENED and os.readlink(f"/proc/self/fd/{fd}") != real:
            raise DirectReadRefused(f"{relative} changed while it was opened")
    except BaseException:
        os.close(fd)
        raise
    return fd, status


def local_root(repository: ManagedRepository, settings: RepositorySettings) -> str:
    """The repository's real path on this machine; refused when it is not here."""
    local = settings.local_root(repository.root)
    if not os.path.isdir(local):
        where = f" (mapped to {local} by {settings.path})" if local != repository.root else ""
        raise DirectReadRefused(f"the managed repository {repository.root}{where} is not on this machine")
    return os.path.realpath(local)


def find_plate_files(conn, plate: OmeroPlate, settings: RepositorySettings) -> PlateFiles:
    """Every plane of ``plate``'s layout mapped to its checked file, or
    :class:`DirectReadRefused`. Costs a few calls (the repositories, then one query
    for the plate's files) whatever the plate's size; a machine without the
    repository is told apart before the files are asked for."""
    return find_files_under(conn, plate, repository_here(conn, plate, settings))


def repository_here(conn, plate: OmeroPlate, settings: RepositorySettings) -> str:
    """The managed repository's real path on this machine, where direct reads of
    ``plate`` may be tried; else :class:`DirectReadRefused`. Asks the server for its
    repositories only (two calls and one round-trip of questions to them)."""
    if not settings.direct_reads:
        raise DirectReadRefused(f"direct reads are switched off ({settings.path})")
    if len(plate.all_runs) > 1:
        raise DirectReadRefused(f"the plate has {len(plate.all_runs)} acquisition runs; files are mapped to the "
                                "fields of plates of one run only")
    repository = _repository_of(conn)
    if repository is None:
        raise DirectReadRefused("the server has no managed repository")
    return local_root(repository, settings)


def find_files_under(conn, plate: OmeroPlate, root: str) -> PlateFiles:
    """Every plane of ``plate``'s layout mapped to its checked file under ``root``
    (:func:`repository_here`), in one query; else :class:`DirectReadRefused`."""
    rows = plate_files(conn, plate)
    if not rows:
        raise DirectReadRefused("its images have no original files in the repository")
    filesets = {r.fileset_id for r in rows}
    if len(filesets) > 1:
        raise DirectReadRefused(f"its images come from {len(filesets)} filesets")
    if rows[0].fileset_images != len(plate.all_image_ids):
        raise DirectReadRefused(f"its fileset holds {rows[0].fileset_images} images, the plate "
                                f"{len(plate.all_image_ids)}")
    return PlateFiles(root, _check(root, _map_planes(plate, rows)))


def _map_planes(plate: OmeroPlate, rows: list[RepoFile]) -> dict[PlaneKey, RepoFile]:
    """The ImageXpress (MetaXpress) naming rules, applied below the plate's ``.HTD``."""
    paths = {relative_path(r.path, r.name): r for r in rows}
    htds = [p for p in paths if p.lower().endswith(".htd")]
    if len(htds) != 1:
        raise DirectReadRefused(f"its fileset has {len(htds)} .HTD files: not one ImageXpress plate")
    base = htds[0].rpartition("/")[0]
    below = {p[len(base) + 1:] if base else p: p for p in paths if not base or p.startswith(base + "/")}
    try:
        indexed = index_files(below, strict=True)
    except ValueError as exc:
        raise DirectReadRefused(str(exc)) from None
    by_plane = {(k.well, k.site, k.channel, k.z, k.t): paths[below[p]] for k, p in indexed.items()}
    layout = plate.layout
    planes: dict[PlaneKey, RepoFile] = {}
    for unit in layout.units():
        for channel in range(1, len(layout.channels) + 1):
            for z in range(1, layout.z_planes + 1):
                key = (unit.well, unit.site, channel, z, unit.timepoint)
                if key not in by_plane:
                    raise DirectReadRefused(f"no file for well {unit.well} field {unit.site} channel {channel} "
                                            f"z {z} t {unit.timepoint} in its fileset")
                planes[key] = by_plane[key]
    return planes


def _check(root: str, planes: dict[PlaneKey, RepoFile]) -> dict[PlaneKey, str]:
    """Each file inside the root, a readable regular file of the size recorded."""
    checked: dict[PlaneKey, str] = {}
    folders: dict[str, str] = {}
    for key, row in planes.items():
        relative = relative_path(row.path, row.name)
        fd, status = _open_regular(root, relative, folders)
        os.close(fd)
        size = status.st_size
        if row.size is not None and size != row.size:
            raise DirectReadRefused(f"{relative} has {size} bytes, the server recorded {row.size}")
        checked[key] = relative
    return checked


__all__ = ["DirectReadRefused", "ManagedRepository", "PlateFiles", "RepoFile", "find_files_under", "find_plate_files",
           "managed_repository", "on_a_thread", "open_inside", "plate_files", "relative_path", "repository_here",
           "resolve_inside", "start_repository_lookup"]
