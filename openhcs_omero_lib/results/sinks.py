"""Where results go: the sink interface, and a local folder. Every sink writes all or nothing."""

from __future__ import annotations

import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path

from openhcs_omero_lib.results.tables import PlateResults


class ResultSink(ABC):
    """Somewhere results go. ``write`` stores everything or nothing and returns
    descriptions of what it stored."""

    @abstractmethod
    def write(self, results: PlateResults) -> list[str]:
        ...


class LocalFolderSink(ResultSink):
    """``images.csv``, ``wells.csv`` and ``results.json`` in a folder.

    Files are written to a temporary folder beside the target and moved in only
    when all are complete, so a failed run leaves no half-written output.
    ``pictures`` (file name -> PNG bytes) are written with them."""

    def __init__(self, folder: str | os.PathLike, pictures: dict[str, bytes] | None = None):
        self.folder = Path(folder)
        self.pictures = dict(pictures or {})

    def write(self, results: PlateResults) -> list[str]:
        parent = self.folder.resolve().parent
        parent.mkdir(parents=True, exist_ok=True)
        files = {**results.files(), **self.pictures}
        staging = Path(tempfile.mkdtemp(prefix=f".{self.folder.name}.", dir=parent))
        try:
            for name, data in files.items():
                (staging / name).write_bytes(data)
            created = not self.folder.exists()
            if created:
                staging.rename(self.folder)
                staging = None  # type: ignore[assignment]
            else:
                for name in files:
                    os.replace(staging / name, self.folder / name)
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
        return [str(self.folder / name) for name in files]
