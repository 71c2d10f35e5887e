"""Server-side settings: where a run's units are computed, chosen by whoever runs the server.

The Dask cluster a run uses is the server administrator's decision, never a field of
the script dialog: a user who could name a scheduler could send the job's session key
to any machine. OMERO's Processor passes a script only an allow-list of environment
variables (omero-py ``processor.py``, ``ProcessI.make_env``: PATH, PYTHONPATH, HOME,
OMERODIR, ... and OMERO_HOME, which it sets), so the setting is a file, looked up in
this order (the first that exists wins):

1. ``$OPENHCS_OMERO_CONFIG`` (the command line; it does not reach a script),
2. ``$OMERODIR/etc/openhcs-omero.yaml`` and ``$OMERO_HOME/etc/openhcs-omero.yaml``
   (the server's folder, where its own ``etc/`` is),
3. ``/etc/openhcs-omero.yaml``.

A file without a ``dask`` section (or none at all) keeps the worker processes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CONFIG_ENV = "OPENHCS_OMERO_CONFIG"
FILE_NAME = "openhcs-omero.yaml"
SYSTEM_FILE = Path("/etc") / FILE_NAME
LOCAL_PREFIX = "local:"


class SettingsError(ValueError):
    """A settings file (or a ``--dask`` value) that cannot be used; says which and why."""


class ClusterError(RuntimeError):
    """A cluster that cannot be reached, has no workers, or whose workers cannot open
    the plate; the message says which, without secrets."""


class TlsFiles(BaseModel):
    """Dask's TLS between this server and the cluster (``distributed.security.Security``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ca_file: str
    cert: str
    key: str


class DaskSettings(BaseModel):
    """Where the units go: ``scheduler`` (an address, or ``local:N`` for a cluster of N
    worker processes on this machine) or ``slurm`` (a dask-jobqueue SLURMCluster
    started for the run: ``jobs`` and SLURMCluster's own keywords)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    scheduler: str | None = None
    slurm: dict[str, Any] | None = None
    tls: TlsFiles | None = None
    chunk_size: int | None = Field(default=None, ge=1, le=1024)
    """units per task; default: from the number of units and the cluster's threads"""
    start_timeout: float = Field(default=600.0, gt=0)
    """seconds a run waits for a first worker (a batch queue), or without any worker"""
    allow_unencrypted: bool = False
    """send units (and the session key) over plain TCP to another machine"""
    origin: str = ""
    """the file (or option) these settings came from, for messages"""

    @model_validator(mode="after")
    def _one_cluster(self) -> DaskSettings:
        if (self.scheduler is None) == (self.slurm is None):
            raise ValueError("give either scheduler (an address or local:N) or slurm, not both or neither")
        if self.scheduler is not None:
            local_workers(self.scheduler)  # a malformed local:N fails here
        return self


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    dask: DaskSettings | None = None


def local_workers(scheduler: str) -> int | None:
    """N of ``local:N``; None for an address."""
    if not scheduler.startswith(LOCAL_PREFIX):
        return None
    text = scheduler[len(LOCAL_PREFIX):]
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise ValueError(f"local:N needs N between 1 and 64, got {scheduler!r}")
    return int(text)


def settings_paths(environ: Mapping[str, str] | None = None) -> list[Path]:
    env = os.environ if environ is None else environ
    paths = []
    if env.get(CONFIG_ENV):
        paths.append(Path(env[CONFIG_ENV]))
    for var in ("OMERODIR", "OMERO_HOME"):
        if env.get(var):
            paths.append(Path(env[var]) / "etc" / FILE_NAME)
    paths.append(SYSTEM_FILE)
    return paths


def load_settings(environ: Mapping[str, str] | None = None) -> ServerSettings:
    """The first settings file that exists, parsed; empty settings when there is none.
    A file named by ``$OPENHCS_OMERO_CONFIG`` must exist."""
    env = os.environ if environ is None else environ
    for path in settings_paths(env):
        if path.is_file():
            return parse_settings(path.read_text(encoding="utf-8"), str(path))
        if env.get(CONFIG_ENV) and str(path) == env[CONFIG_ENV]:
            raise SettingsError(f"{CONFIG_ENV} names {path}, which is not a file")
    return ServerSettings()


def parse_settings(text: str, origin: str) -> ServerSettings:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SettingsError(f"{origin}: not valid YAML ({' '.join(str(exc).split())})") from None
    if data is None:
        return ServerSettings()
    if not isinstance(data, dict):
        raise SettingsError(f"{origin}: expected a mapping with a 'dask' section")
    if isinstance(data.get("dask"), dict):
        data = {**data, "dask": {**data["dask"], "origin": origin}}
    try:
        return ServerSettings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(f"{origin}: {_first_error(exc)}") from None


def dask_option(value: str, file_settings: ServerSettings | None = None) -> DaskSettings:
    """``--dask SCHEDULER``: an address or ``local:N``; TLS files and the other
    settings come from the settings file when it has a ``dask`` section."""
    base = file_settings.dask if file_settings is not None else None
    kept = base.model_dump(exclude={"scheduler", "slurm", "origin"}) if base is not None else {}
    try:
        return DaskSettings(**kept, scheduler=value.strip(), origin="--dask")
    except ValidationError as exc:
        raise SettingsError(f"--dask: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    message = err["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


__all__ = ["CONFIG_ENV", "ClusterError", "DaskSettings", "ServerSettings", "SettingsError", "TlsFiles", "dask_option",
           "load_settings", "local_workers", "parse_settings", "settings_paths"]
