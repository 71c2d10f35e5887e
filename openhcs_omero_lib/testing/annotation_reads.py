"""BlitzGateway's ``listAnnotations``, answered from the stand-in's store.

``conn.getObject("Plate", id).listAnnotations(ns=...)`` (and the same on a Well or an
Image) loads every annotation link of the object with one HQL text that names the
object's ID inline (``BlitzObjectWrapper._loadAnnotationLinks``), then filters by
namespace on the client; a FileAnnotation's file comes loaded, so that
``getFileInChunks`` can read it. This is how a user's client sees the results the
scripts attach, so tests read them this way rather than through the adapter's own
queries. Only this text, for Plate, Well and Image, is modelled.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import omero.model

from openhcs_omero_lib.testing.blitz import _with_details
from openhcs_omero_lib.testing.wire import ref, shell

# omero.gateway.BlitzObjectWrapper._loadAnnotationLinks; whitespace is normalised before matching.
ANNOTATION_LINKS = re.compile(
    r"select l from (Plate|Well|Image)AnnotationLink as l join fetch l\.details\.owner "
    r"join fetch l\.details\.creationEvent join fetch l\.child as a join fetch a\.details\.owner "
    r"left outer join fetch a\.file join fetch a\.details\.creationEvent where l\.parent\.id=(\d+)")


def answer(query_service, text: str, params, current) -> list[Any] | None:
    """The object's annotation links, or None when ``text`` is another query."""
    match = ANNOTATION_LINKS.fullmatch(text)
    if match is None:
        return None
    kind, parent_id = match[1], int(match[2])
    store = query_service.server.store
    found = []
    for link in store.all(f"{kind}AnnotationLink"):
        if link.getParent().getId().getValue() != parent_id or not query_service._visible(link, current):
            continue
        ann = store.resolve(link.getChild())
        if ann is None:
            continue
        out = _with_details(store, link, shell(link))
        out.setParent(ref(link.getParent()))
        child = _with_details(store, ann, shell(ann))
        if isinstance(ann, omero.model.FileAnnotationI) and ann.getFile() is not None:
            child.setFile(copy.copy(store.get("OriginalFile", ann.getFile().getId().getValue())))
        out.setChild(child)
        found.append(out)
    return found


__all__ = ["ANNOTATION_LINKS", "answer"]
