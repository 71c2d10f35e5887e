"""The administrator's setting for direct reads: where this machine sees the server's
managed repository, and whether to read from it at all.

It is a file, never a script input: a script's user cannot point the bundle at other
files. The first of these that exists is used:

- ``$OMERODIR/etc/openhcs-omero/repositories.yaml`` (the server's folder, which the
  Processor passes on to scripts), then ``$OMERO_HOME/etc/openhcs-omero/repositories.yaml``
  (the Processor sets ``OMERO_HOME`` to the same folder);
- ``/etc/openhcs-omero/repositories.yaml``;
- ``~/.config/openhcs-omero/repositories.yaml`` (a workstation; inside the Processor
  ``~`` is the home of the user the server runs as).

Without one, the repository is read where the server says it is, which is right for
a script running in the server's Processor::

    # repositories.yaml
    direct_reads: true                  # false: always read pixels through RawPixelsStore
    mounts:                             # the root as `omero fs repos` shows it: where it is here
      /OMERO/ManagedRepository: /mnt/omero/ManagedRepository
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

RELATIVE = "openhcs-omero/repositories.yaml"


class SettingsError(ValueError):
    """The settings file cannot be used; the message names it and says why."""


@dataclass(frozen=True)
class RepositorySettings:
    direct_reads: bool = True
    mounts: tuple[tuple[str, str], ...] = ()
    """(root on the server, the same folder on this machine), as the file lists them"""
    path: str | None = None
    """The file they came from; None for the defaults"""

    def local_root(self, server_root: str) -> str:
        """Where ``server_root`` is on this machine: the mount of the longest server
        folder that is ``server_root`` or one of its parents, else ``server_root``."""
        root = PurePosixPath(server_root)
        best: tuple[int, str] | None = None
        for server, local in self.mounts:
            prefix = PurePosixPath(server)
            if root == prefix or prefix in root.parents:
                depth = len(prefix.parts)
                if best is None or depth > best[0]:
                    best = (depth, str(Path(local) / root.relative_to(prefix)))
        return best[1] if best else server_root


def settings_paths() -> list[Path]:
    """Where the settings file is looked for, in order."""
    places = []
    for var in ("OMERODIR", "OMERO_HOME"):
        if os.environ.get(var):
            places.append(Path(os.environ[var]) / "etc" / RELATIVE)
    places.append(Path("/etc") / RELATIVE)
    places.append(Path.home() / ".config" / RELATIVE)
    return list(dict.fromkeys(places))


def load_settings(path: str | os.PathLike | None = None) -> RepositorySettings:
    """The settings of ``path``, or of the first file of :func:`settings_paths` that
    exists, or the defaults. Raises :class:`SettingsError` for a file that is not
    valid."""
    if path is None:
        path = next((p for p in settings_paths() if p.is_file()), None)
        if path is None:
            return RepositorySettings()
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SettingsError(f"{path}: {str(exc).splitlines()[0]}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict) or set(data) - {"direct_reads", "mounts"}:
        raise SettingsError(f"{path}: expected the keys direct_reads and mounts, got "
                            f"{sorted(data) if isinstance(data, dict) else type(data).__name__}")
    direct = data.get("direct_reads", True)
    if not isinstance(direct, bool):
        raise SettingsError(f"{path}: direct_reads must be true or false, got {direct!r}")
    mounts = data.get("mounts") or {}
    if not isinstance(mounts, dict):
        raise SettingsError(f"{path}: mounts must map server folders to local folders")
    pairs = []
    for server, local in mounts.items():
        if not (isinstance(server, str) and isinstance(local, str) and server.startswith("/")
                and os.path.isabs(local)):
            raise SettingsError(f"{path}: mounts: {server!r}: {local!r} is not an absolute folder on the "
                                "server and one here")
        pairs.append((server, local))
    return RepositorySettings(direct, tuple(pairs), str(path))


__all__ = ["RepositorySettings", "SettingsError", "load_settings", "settings_paths"]
