"""The stand-in's repositories: where an import puts a plate's files, how the
server describes its repositories, and the query that lists a plate's files.

Modelled on OMERO's sources:

- omero-blitz ``repo/AbstractRepositoryI`` (``handleRepoChanges``): a repository is
  described by an OriginalFile whose ``hash`` is the repository's UUID, ``name`` its
  folder's name, ``path`` the folder's parent with a final ``/``, and ``mimetype``
  ``Repository``; ``SharedResourcesI.repositories`` returns the descriptions with a
  proxy each, and omero-py (``client.getManagedRepository``, ``omero fs repos``) tells
  the managed one by ``ManagedRepositoryPrx.checkedCast``. A server has three: the
  data folder (``/OMERO``), the scripts (``ScriptRepo``) and the managed repository
  (``/OMERO/ManagedRepository``).
- omero-blitz ``omero-blitz.properties`` (``omero.fs.repo.path``, default
  ``%user%_%userId%//%year%-%month%/%day%/%time%``) and ``repo/ManagedRepositoryI``
  (``expandAndCreateTime``: ``HH-mm-ss.SSS``, one millisecond later when taken): an
  import's files go to a new folder of that template under the repository's root.
- omero-blitz ``repo/CheckedPath``: a file's OriginalFile ``path`` is its folder
  relative to the root with a final ``/``, its ``name`` the file's name; omero-model
  ``mappings/fs.ome.xml``: a Fileset has ``templatePrefix``, ``usedFiles`` (entries
  with ``clientPath`` and ``originalFile``) and ``images``.
- omero-blitz ``graph-rules/blitz-delete-rules.xml``: a fileset's images are deleted
  together or not at all ("within Fileset may not delete Image while Image remains").

What an import copies is what Bio-Formats reports as a MetaXpress plate's used files:
its ``.HTD`` and its image files, not other files of the folder. Copied by default,
as ``omero import`` uploads them; ``transfer="ln"`` hard-links them instead (``omero
import --transfer=ln``), which keeps them inside the repository too.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import shutil
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import omero
import omero.grid
import omero.model
from omero.rtypes import rint, rlong, rstring

from openhcs_omero_lib.omero import queries as Q
from openhcs_omero_lib.plates.imagexpress import find_htd, read_layout
from openhcs_omero_lib.testing._servant import StandInServant, servant
from openhcs_omero_lib.testing.wire import param

TRANSFERS = ("upload", "ln")


@dataclass(frozen=True)
class RepositoryInfo:
    id: int
    uuid: str
    folder: Path
    managed: bool

    def description(self) -> omero.model.OriginalFileI:
        ofile = omero.model.OriginalFileI(self.id, True)
        ofile.setHash(rstring(self.uuid))
        ofile.setName(rstring(self.folder.name))
        ofile.setPath(rstring(str(self.folder.parent).rstrip("/") + "/"))
        ofile.setMimetype(rstring("Repository"))
        ofile.setSize(rlong(0))
        return ofile


def _counted_is_a(self, id, current=None):
    """``checkedCast`` asks the servant ``ice_isA``: a round-trip, counted as one."""
    self.server._before_call(f"{self.service_name}.ice_isA", self.session, current)
    return type(self).api_base.ice_isA(self, id, current)


@servant(omero.grid.Repository, "Repository")
class RepositoryService(StandInServant, omero.grid.Repository):
    info: RepositoryInfo | None = None

    def root(self, current=None):
        return self.info.description()


@servant(omero.grid.ManagedRepository, "ManagedRepository")
class ManagedRepositoryService(StandInServant, omero.grid.ManagedRepository):
    info: RepositoryInfo | None = None

    def root(self, current=None):
        return self.info.description()


RepositoryService.ice_isA = _counted_is_a
ManagedRepositoryService.ice_isA = _counted_is_a


def repository_map(shared_resources) -> omero.grid.RepositoryMap:
    """``SharedResources.repositories()``: each description with a proxy of the
    calling session's own."""
    server, session = shared_resources.server, shared_resources.session
    cache = shared_resources.__dict__.setdefault("_repository_proxies", {})
    descriptions, proxies = [], []
    for info in server.repositories:
        if info.id not in cache:
            cls, prx_type = ((ManagedRepositoryService, omero.grid.ManagedRepositoryPrx) if info.managed
                             else (RepositoryService, omero.grid.RepositoryPrx))
            cache[info.id] = server.add_servant(cls, session, prx_type, info=info)
        descriptions.append(info.description())
        proxies.append(cache[info.id])
    return omero.grid.RepositoryMap(descriptions=descriptions, proxies=proxies)


def template_folder(root: Path, user_name: str, user_id: int, now: datetime.datetime | None = None) -> str:
    """A new import folder of the default template, relative to ``root``, with a final ``/``."""
    now = now or datetime.datetime.now()
    while True:
        relative = (f"{user_name}_{user_id}/{now:%Y-%m}/{now:%d}/"
                    f"{now:%H-%M-%S}.{now.microsecond // 1000:03d}/")
        if not (root / relative).exists():
            (root / relative).mkdir(parents=True)
            return relative
        now += datetime.timedelta(milliseconds=1)


def used_files(folder: Path) -> list[Path]:
    """A MetaXpress plate's used files: its ``.HTD`` and its images, relative to ``folder``."""
    _, files = read_layout(folder)
    found = sorted(p.relative_to(folder) for p in files.values())
    htd = find_htd(folder)
    return ([htd.relative_to(folder)] if htd is not None else []) + found


def copy_into_repository(folder: Path, target: Path, transfer: str) -> list[Path]:
    """Put the plate's used files under ``target``; returns them relative to ``target``."""
    if transfer not in TRANSFERS:
        raise ValueError(f"transfer must be one of {TRANSFERS}, not {transfer!r}")
    copied = []
    for relative in used_files(folder):
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        if transfer == "ln":
            try:
                os.link(folder / relative, target / relative)
            except OSError:  # another file system: as an upload
                shutil.copyfile(folder / relative, target / relative)
        else:
            shutil.copyfile(folder / relative, target / relative)
        copied.append(relative)
    return copied


def add_fileset(store, root: Path, template: str, files: list[str], client_paths: list[str], owner,
                group_id: int) -> int:
    """A Fileset of ``files`` (relative to ``root``), each an OriginalFile with its
    path, name, size and SHA-1, as an import registers them; returns its ID."""
    fileset = omero.model.FilesetI()
    fileset.setTemplatePrefix(rstring(template))
    fsid = store.add(fileset, owner, group_id).getId().getValue()
    for relative, client_path in zip(files, client_paths):
        folder, _, name = relative.rpartition("/")
        data = (root / relative).read_bytes()
        ofile = omero.model.OriginalFileI()
        ofile.setPath(rstring(folder + "/"))
        ofile.setName(rstring(name))
        ofile.setSize(rlong(len(data)))
        ofile.setHash(rstring(hashlib.sha1(data).hexdigest()))
        ofile.setMimetype(rstring("application/octet-stream"))
        ofile = store.add(ofile, owner, group_id)
        entry = omero.model.FilesetEntryI()
        entry.setFileset(omero.model.FilesetI(fsid, False))
        entry.setOriginalFile(omero.model.OriginalFileI(ofile.getId().getValue(), False))
        entry.setClientPath(rstring(client_path))
        store.add(entry, owner, group_id, {"fileset": fsid})
    return fsid


def new_repositories(next_id, data_folder: Path, scripts_folder: Path) -> list[RepositoryInfo]:
    managed = data_folder / "ManagedRepository"
    managed.mkdir(parents=True, exist_ok=True)
    scripts_folder.mkdir(parents=True, exist_ok=True)
    return [RepositoryInfo(next_id(), str(uuidlib.uuid4()), data_folder, False),
            RepositoryInfo(next_id(), "ScriptRepo", scripts_folder, False),
            RepositoryInfo(next_id(), str(uuidlib.uuid4()), managed, True)]


# ---- IQuery ------------------------------------------------------------------------------------

def project(query_service, text: str, params, current) -> list[list[Any]] | None:
    """Rows of :data:`~..omero.queries.PLATE_FILESET_FILES`, or None for another query.
    As the server's security filter does, only what the caller may read takes part:
    the plate, its samples and images, the filesets, their entries and files, and the
    images counted."""
    if text != Q.PLATE_FILESET_FILES:
        return None
    store = query_service.server.store
    visible = lambda obj: query_service._visible(obj, current)  # noqa: E731
    pid = param(params, "id")
    plate = store.get("Plate", pid)
    if not visible(plate):
        return []
    filesets = set()
    for well in store.children("Well", "plate", pid):
        for ws in store.children("WellSample", "well", well.getId().getValue()):
            image = store.resolve(ws.getImage())
            if visible(ws) and visible(image) and image.getFileset() is not None:
                filesets.add(image.getFileset().getId().getValue())
    rows = []
    for fsid in sorted(filesets):
        fileset = store.get("Fileset", fsid)
        if not visible(fileset):
            continue
        images = sum(visible(i) for i in store.children("Image", "fileset", fsid))
        for entry in store.children("FilesetEntry", "fileset", fsid):
            ofile = store.resolve(entry.getOriginalFile())
            if not (visible(entry) and visible(ofile)):
                continue
            rows.append([rlong(fsid), rint(images), rstring(ofile.getPath().getValue()),
                         rstring(ofile.getName().getValue()), rlong(ofile.getSize().getValue())])
    rows.sort(key=lambda r: (r[0].getValue(), r[2].getValue(), r[3].getValue()))
    return rows


# ---- Delete2 ----------------------------------------------------------------------------------

def check_fileset_deletes(store, targets: dict[str, list[int]]) -> None:
    """Refuse deleting some of a fileset's images while others remain."""
    deleting = set(targets.get("Image", []))
    for iid in deleting:
        image = store.get("Image", iid)
        if image is None or image.getFileset() is None:
            continue
        fsid = image.getFileset().getId().getValue()
        left = [i.getId().getValue() for i in store.children("Image", "fileset", fsid)
                if i.getId().getValue() not in deleting]
        if left:
            raise omero.ValidationException(
                message=f"within Fileset:{fsid} may not delete Image:{iid} while Image:{left[0]} remains")


__all__ = ["ManagedRepositoryService", "RepositoryInfo", "RepositoryService", "TRANSFERS", "add_fileset",
           "check_fileset_deletes", "copy_into_repository", "new_repositories", "project", "repository_map",
           "template_folder", "used_files"]
