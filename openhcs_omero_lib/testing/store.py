"""The stand-in's database: real ``omero.model`` objects, users, groups and files.

Objects are kept by class name and ID. Each has ``details`` (owner, group,
permissions) as the server would set them, and visibility follows OMERO's rules
closely enough for the adapter's questions (:mod:`.acl`): a user sees objects of the
groups they belong to (in a private group, only their own), in the group of the
call's context (``omero.group``; ``-1`` means all of them), and may annotate an object
they own or one in a group that allows it.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import Any

import omero
import omero.model
from omero.rtypes import rlong

from openhcs_omero_lib.testing import acl


@dataclass
class Group:
    id: int
    name: str
    permissions: str = "rwra--"  # read-annotate: members may annotate each other's data


@dataclass
class User:
    id: int
    name: str
    password: str
    groups: list[int]
    default_group: int


@dataclass
class Session:
    uuid: str
    user: User
    group: int
    connections: int = 0
    closed: bool = False
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)


def class_name(obj: Any) -> str:
    """``omero.model.PlateI`` instance -> ``Plate``."""
    name = type(obj).__name__
    return name[:-1] if name.endswith("I") else name


class Store:
    """Objects, files, tables, users, groups and sessions of one stand-in server."""

    def __init__(self):
        self.lock = threading.RLock()
        self._ids = itertools.count(1)
        self.objects: dict[str, dict[int, Any]] = {}
        self.files: dict[int, bytearray] = {}
        self.tables: dict[int, dict[str, Any]] = {}
        self.groups: dict[int, Group] = {}
        self.users: dict[str, User] = {}
        self.sessions: dict[str, Session] = {}
        self._children: dict[tuple[str, str, int], list[Any]] = {}
        self.pixels_data: dict[int, Any] = {}
        """Pixels ID -> callable (z, c, t) -> 2-D numpy array"""
        self.list_index: dict[int, int] = {}
        """WellSample ID -> its index in its well's list (Well.wellSamples is an ordered
        list, omero-model mappings/screen.ome.xml). Deleting a sample leaves a gap: the
        others keep their index, as the server's well_index column does."""

    def next_id(self) -> int:
        return next(self._ids)

    # ---- users and groups -----------------------------------------------------------

    def add_group(self, name: str, permissions: str = "rwra--") -> Group:
        group = Group(self.next_id(), name, permissions)
        self.groups[group.id] = group
        return group

    def add_user(self, name: str, password: str, groups: list[Group]) -> User:
        user = User(self.next_id(), name, password, [g.id for g in groups], groups[0].id)
        self.users[name] = user
        return user

    # ---- objects --------------------------------------------------------------------

    def add(self, obj: Any, owner: User, group_id: int, parents: dict[str, int] | None = None,
            index: int | None = None) -> Any:
        """Give ``obj`` an ID and details, and keep it; ``parents`` (field -> ID)
        indexes it for :meth:`children`. A WellSample gets ``index`` in its well's
        list, by default the next after the well's last."""
        with self.lock:
            if obj.getId() is None:
                obj.setId(rlong(self.next_id()))
            details = obj.getDetails()
            details.setOwner(omero.model.ExperimenterI(owner.id, False))
            details.setGroup(omero.model.ExperimenterGroupI(group_id, False))
            details.setPermissions(omero.model.PermissionsI(self.groups[group_id].permissions))
            details.setUpdateEvent(omero.model.EventI(self.next_id(), False))
            kind = class_name(obj)
            self.objects.setdefault(kind, {})[obj.getId().getValue()] = obj
            if kind == "WellSample" and parents and "well" in parents:
                if index is None:
                    taken = [self.list_index[o.getId().getValue()]
                             for o in self.children("WellSample", "well", parents["well"])]
                    index = max(taken) + 1 if taken else 0
                self.list_index[obj.getId().getValue()] = index
            for attr, parent_id in (parents or {}).items():
                self._children.setdefault((kind, attr, parent_id), []).append(obj)
            return obj

    def children(self, kind: str, attr: str, parent_id: int) -> list[Any]:
        """Objects of ``kind`` whose ``attr`` is the object ``parent_id``, in insertion order."""
        present = self.objects.get(kind, {})
        return [o for o in self._children.get((kind, attr, parent_id), [])
                if o.getId().getValue() in present]

    def touch(self, obj: Any) -> None:
        """Record a modification, as the server's update event does."""
        obj.getDetails().setUpdateEvent(omero.model.EventI(self.next_id(), False))

    def get(self, kind: str, oid: int) -> Any | None:
        return self.objects.get(kind, {}).get(oid)

    def all(self, kind: str) -> list[Any]:
        return list(self.objects.get(kind, {}).values())

    def remove(self, kind: str, oid: int) -> None:
        with self.lock:
            self.objects.get(kind, {}).pop(oid, None)

    @staticmethod
    def group_of(obj: Any) -> int:
        return obj.getDetails().getGroup().getId().getValue()

    @staticmethod
    def owner_of(obj: Any) -> int:
        return obj.getDetails().getOwner().getId().getValue()

    def visible(self, obj: Any, session: Session, ctx_group: int | None) -> bool:
        if not acl.readable_by(self, obj, session.user):
            return False
        wanted = session.group if ctx_group is None else ctx_group
        return wanted == -1 or self.group_of(obj) == wanted

    def may_annotate(self, obj: Any, session: Session) -> bool:
        return acl.allowed(self, obj, session.user, "a")

    # ---- convenience for tests ------------------------------------------------------

    def annotations_on(self, kind: str, oid: int, ns: str | None = None) -> list[Any]:
        """Annotations linked to an object (optionally of one namespace)."""
        found = []
        for link in self.all(f"{kind}AnnotationLink"):
            if link.getParent().getId().getValue() != oid:
                continue
            ann = self.resolve(link.getChild())
            if ann is not None and (ns is None or (ann.getNs() and ann.getNs().getValue() == ns)):
                found.append(ann)
        return found

    def resolve(self, ref: Any) -> Any | None:
        """The stored object behind a (possibly unloaded) reference."""
        if ref is None or ref.getId() is None:
            return None
        return self.get(class_name(ref), ref.getId().getValue())

    def file_text(self, file_id: int) -> str:
        return bytes(self.files[file_id]).decode()

