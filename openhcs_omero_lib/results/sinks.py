"""Where results go: the sink interface, and a local folder. Every sink writes all or nothing."""

from __future__ import annotations

import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas (a tenth of a second) is not imported to check a folder
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

    def _missing_parents(self) -> list[Path]:
        """The folders above the target that do not exist yet, nearest first."""
        missing = []
        parent = Path(os.path.abspath(self.folder)).parent
        while not parent.exists() and parent != parent.parent:
            missing.append(parent)
            parent = parent.parent
        return missing

    def check(self) -> None:
        """Raise OSError unless :meth:`write` could store the results: the target is
        a folder or does not exist, and the nearest existing folder above it takes a
        new entry (tried by making one and removing it: permissions alone do not say,
        for root or on a read-only file system). Leaves nothing behind."""
        target = Path(os.path.abspath(self.folder))
        if target.exists() and not target.is_dir():
            raise NotADirectoryError(20, "it exists and is not a folder", str(self.folder))
        missing = self._missing_parents()
        base = target if target.is_dir() else (missing[-1].parent if missing else target.parent)
        if not base.is_dir():
            raise NotADirectoryError(20, "a part of the path is a file", str(base))
        os.rmdir(tempfile.mkdtemp(prefix=f".{self.folder.name}.check.", dir=base))

    def write(self, results: PlateResults) -> list[str]:
        parent = self.folder.resolve().parent
        created = self._missing_parents()
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self._write(results, parent)
        except BaseException:
            for folder in created:  # nearest first: remove what this write made, if empty
                try:
                    folder.rmdir()
                except OSError:
                    break
            raise
        return [str(self.folder / name) for name in {**results.files(), **self.pictures}]

    def _write(self, results: PlateResults, parent: Path) -> None:
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
