"""Finding (or installing) OpenHCS and running :mod:`.openhcs_peer` in its Python.

OpenHCS is not a dependency of this package: it pins its own versions of numpy,
pandas, tifffile and more, and pulls in Qt, numba and opencv (about 1.5 GB). It
lives in an environment of its own, by default ``~/.cache/openhcs-omero/openhcs-venv``
(``--install-openhcs`` creates it with pip), or any Python given with
``--openhcs-python`` / ``OPENHCS_PYTHON`` that can import ``openhcs``. This package
is put on that Python's path through a link in a temporary folder, never installed
there. Without OpenHCS the benchmark reports the column as skipped and says why.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from openhcs_omero_lib.bench.plates import link_copy

OPENHCS_VERSION = "0.8.6"
"""The release the peer step is written against (its orchestrator API changes often)."""

PYTHON_ENV = "OPENHCS_PYTHON"


def default_venv() -> Path:
    from openhcs_omero_lib.plates.synthetic import cache_dir

    return cache_dir() / "openhcs-venv"


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _version_of(python: str) -> str | None:
    """OpenHCS's version in ``python``, or None when it cannot import it."""
    probe = "import importlib.metadata as m, openhcs; print(m.version('openhcs'))"
    try:
        out = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def find_python(explicit: str | None = None) -> tuple[str | None, str]:
    """A Python that has OpenHCS, and a note saying which (or why there is none)."""
    candidates = []
    if explicit:
        candidates.append((explicit, "--openhcs-python"))
    elif os.environ.get(PYTHON_ENV):
        candidates.append((os.environ[PYTHON_ENV], PYTHON_ENV))
    else:
        venv_python = _venv_python(default_venv())
        if venv_python.exists():
            candidates.append((str(venv_python), "the cached OpenHCS environment"))
        if importlib.util.find_spec("openhcs") is not None:
            candidates.append((sys.executable, "this Python"))
    for python, where in candidates:
        version = _version_of(python)
        if version:
            note = f"openhcs {version} from {where}"
            if version != OPENHCS_VERSION:
                note += f" (the benchmark is written against {OPENHCS_VERSION})"
            return python, note
        if where.startswith(("--", PYTHON_ENV)):
            return None, f"skipped: {python} ({where}) cannot import openhcs"
    return None, ("skipped: openhcs not installed (it is optional: run with --install-openhcs, or "
                  f"give --openhcs-python PYTHON that has openhcs {OPENHCS_VERSION})")


def install(venv: Path | None = None) -> str:
    """Create OpenHCS's environment with pip (CPU only: no GPU extras); its Python."""
    venv = venv or default_venv()
    python = _venv_python(venv)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"openhcs=={OPENHCS_VERSION}"], check=True)
    return str(python)


def run_peer(python: str, folder: Path, workers: int, pipeline: str, env: dict[str, str]) -> dict:
    """One OpenHCS run on a copy of ``folder`` (OpenHCS writes its metadata into the
    plate folder and its results beside it); the copy goes away afterwards."""
    package = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="openhcs-peer-") as tmp:
        work = Path(tmp)
        (work / "path").mkdir()
        (work / "path" / package.name).symlink_to(package, target_is_directory=True)
        plate = link_copy(folder, work / "plates" / folder.name)
        environ = dict(env)
        environ.update({
            "PYTHONPATH": str(work / "path"),
            "OPENHCS_CPU_ONLY": "true",
            "OPENHCS_HEADLESS": "true",
            # OpenHCS's registries cache themselves under XDG_CACHE_HOME: keep them with ours.
            "XDG_CACHE_HOME": str(default_venv().parent / "openhcs-peer-cache"),
        })
        request = json.dumps({"folder": str(plate), "workers": workers, "pipeline": pipeline})
        out = subprocess.run([python, "-c", "from openhcs_omero_lib.bench.openhcs_peer import main; main()"],
                             input=request, capture_output=True, text=True, env=environ, cwd=tmp)
        if out.returncode != 0:
            tail = "\n".join(out.stderr.strip().splitlines()[-5:])
            raise RuntimeError(f"OpenHCS run failed (status {out.returncode}):\n{tail}")
        return json.loads(out.stdout.strip().splitlines()[-1])
