"""The queries of the Python API's file backend and result reader, answered from the
stand-in's store: one object with its details (:data:`~..omero.queries.OBJECT_DETAILS`)
and the file annotations of a namespace on an object, files fetched
(:data:`~..omero.queries.FILE_ANNOTATION_LINKS`).

As the server's security filter does (omero-server ``OneGroupSecurityFilter``,
``AllGroupsSecurityFilter``), nothing the caller may not read comes back: neither the
object, nor a link, an annotation or a file of another member of a private group.
Annotations of the namespace that are not file annotations come too (``left outer
join fetch a.file``), as on a server.
"""

from __future__ import annotations

from typing import Any

import omero.model

from openhcs_omero_lib.omero import queries as Q
from openhcs_omero_lib.testing.wire import param, ref, shell

KINDS = ("Plate", "Well", "Image")


def answer(query_service, text: str, params, current) -> list[Any] | None:
    """Objects for one of the texts above, or None when ``text`` is another query."""
    for kind in KINDS:
        if text == Q.OBJECT_DETAILS.format(kind=kind):
            obj = query_service.server.store.get(kind, param(params, "id"))
            return [shell(obj)] if query_service._visible(obj, current) else []
        if text == Q.FILE_ANNOTATION_LINKS.format(kind=kind):
            return _file_links(query_service, kind, param(params, "id"),
                               param(params, "ns"), current)
    return None


def _file_links(query_service, kind: str, parent_id: int, ns: str, current) -> list[Any]:
    store = query_service.server.store
    found = []
    for link in store.all(f"{kind}AnnotationLink"):
        if link.getParent().getId().getValue() != parent_id or not query_service._visible(link, current):
            continue
        ann = store.resolve(link.getChild())
        if ann is None or not query_service._visible(ann, current):
            continue
        if ann.getNs() is None or ann.getNs().getValue() != ns:
            continue
        out = shell(link)
        out.setParent(ref(link.getParent()))
        child = shell(ann)
        if isinstance(ann, omero.model.FileAnnotationI) and ann.getFile() is not None:
            ofile = store.get("OriginalFile", ann.getFile().getId().getValue())
            child.setFile(shell(ofile) if ofile is not None and query_service._visible(ofile, current)
                          else None)
        out.setChild(child)
        found.append(out)
    return found


__all__ = ["KINDS", "answer"]
