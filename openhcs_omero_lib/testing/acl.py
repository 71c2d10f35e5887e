"""What OMERO's security system decides for one user: which objects a query returns
to them, what they may do to an object, and the restrictions the server sends with
every object it returns.

Modelled on omero-server: ``ome/security/basic/OneGroupSecurityFilter.java`` and
``AllGroupsSecurityFilter.java`` (a member of a private group sees only their own
data), ``BasicACLVoter.java`` (``allowUpdateOrDelete`` grants each scope from the
group's permissions, ``postProcess`` turns the refusals into
``details.permissions`` restrictions) and ``ome/tools/hibernate/ProxyCleanupFilter.java``
(which post-processes every loaded object of every returned graph); and on omero-model
``ome/model/internal/Permissions.java`` (rights per role, WRITE implies ANNOTATE, the
order of the restriction flags). The stand-in has no administrators and no group
owners: every user is a plain member, for whom the server is at its strictest.
"""

from __future__ import annotations

import copy
from typing import Any

import omero
import omero.model

# The scopes BasicACLVoter.postProcess evaluates, in the order of the restriction
# flags (omero.constants.permissions LINK-, EDIT-, DELETE-, ANNOTATERESTRICTION), and
# the right each needs.
_SCOPE_RIGHTS = ("w", "w", "w", "a")
_ROLE_OFFSET = {"user": 0, "group": 2, "world": 4}


def granted(permissions: str, role: str, right: str) -> bool:
    """Whether a group's permissions (``"rwra--"``) grant ``right`` (``"r"``, ``"a"``
    or ``"w"``) to ``role`` (``"user"``: the owner, ``"group"``, ``"world"``)."""
    read, write = permissions[_ROLE_OFFSET[role]:_ROLE_OFFSET[role] + 2]
    if right == "r":
        return read == "r"
    if right == "w":
        return write == "w"
    return write in ("a", "w")  # Permissions.java: WRITE implies ANNOTATE


def readable_by(store, obj: Any, user) -> bool:
    """Whether the security filter lets ``obj`` through to ``user``: a member of its
    group sees it if the group's members may read each other's data, or if it is theirs."""
    gid = store.group_of(obj)
    if gid not in user.groups:
        return False
    permissions = store.groups[gid].permissions
    return (granted(permissions, "group", "r") or granted(permissions, "world", "r")
            or store.owner_of(obj) == user.id)


def allowed(store, obj: Any, user, right: str) -> bool:
    """BasicACLVoter.allowUpdateOrDelete for one scope: the world's right, the
    owner's right if ``user`` owns ``obj``, or the group's right if ``user`` is a member."""
    gid = store.group_of(obj)
    permissions = store.groups[gid].permissions
    if granted(permissions, "world", right):
        return True
    if store.owner_of(obj) == user.id and granted(permissions, "user", right):
        return True
    return gid in user.groups and granted(permissions, "group", right)


def restrictions(store, obj: Any, user) -> list[bool]:
    """The restriction flags the server sends with ``obj`` to ``user`` (True: not
    allowed): link, edit, delete, annotate, then chgrp (owners may move their data)
    and chown (only group owners and administrators, of whom the stand-in has none)."""
    allow = [allowed(store, obj, user, right) for right in _SCOPE_RIGHTS]
    allow += [store.owner_of(obj) == user.id, False]
    return [not a for a in allow]


def as_sent_to(store, value: Any, user, _copies: dict[int, Any] | None = None) -> Any:
    """``value`` (a service's answer) as the server sends it to ``user``: every loaded
    model object in it is a copy whose ``details.permissions`` carries ``user``'s
    restrictions, so that ``PermissionsI.canAnnotate()`` and its siblings answer as they
    would. Stored objects are never changed."""
    copies = {} if _copies is None else _copies
    if isinstance(value, list):
        if not any(isinstance(v, (list, omero.model.IObject)) for v in value):
            return value
        return [as_sent_to(store, v, user, copies) for v in value]
    if not isinstance(value, omero.model.IObject) or not value.isLoaded():
        return value
    if id(value) in copies:
        return copies[id(value)]
    out = copies[id(value)] = copy.copy(value)
    details = getattr(value, "_details", None)
    if details is not None and details._group is not None and details._owner is not None \
            and details._group.getId().getValue() in store.groups:
        out._details = copy.copy(details)
        permissions = omero.model.PermissionsI()
        permissions._perm1 = details._permissions._perm1 if details._permissions is not None else -1
        permissions._restrictions = restrictions(store, value, user)
        out._details._permissions = permissions
    for attr, field in vars(value).items():
        if attr != "_details" and isinstance(field, (list, omero.model.IObject)):
            setattr(out, attr, as_sent_to(store, field, user, copies))
    return out
