"""The layers of the code, as ``pyproject.toml`` writes them down: import-linter's
contracts (the engine imports neither omero nor the adapter, the command line, the
stand-in or the benchmark; the adapter imports neither the command line nor the
stand-in; nothing in the library imports the benchmark; no import cycles), and the
OMERO scripts' imports, which import-linter cannot see (they are files, not modules)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "scripts").rglob("*.py"))
# What an OMERO script may import: omero-py, and the adapter's script entry points.
SCRIPT_IMPORTS = ("omero.", "openhcs_omero_lib.omero.script_params")


def test_import_contracts_are_kept():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if lint is None:
        pytest.fail("lint-imports (import-linter) is not installed: run ./install.sh")
    done = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append(node.module or "")
    return found


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_import_only_the_adapters_script_entry_points(script):
    assert _imports(script), script
    bad = [m for m in _imports(script) if not (m + ".").startswith(SCRIPT_IMPORTS) and m != "omero"]
    assert not bad, f"{script.name} imports {bad}"


def test_the_engine_runs_without_omero():
    """The engine's modules import nothing of omero even when run (lazy imports included
    where an engine function is called without OMERO): a fresh interpreter imports them all."""
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for package in ("plates", "pipeline", "execution", "results", "pictures")
        for p in (ROOT / "openhcs_omero_lib" / package).rglob("*.py") if p.name != "__init__.py")
    modules += ["openhcs_omero_lib.engine", "openhcs_omero_lib.running", "openhcs_omero_lib.api",
                "openhcs_omero_lib.cli.app"]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('omero', 'Ice', 'omero_rois'))))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_the_command_line_answers_help_without_the_engines_imports():
    """Building the command's parser (``--help``, a mistyped option, ``status``) imports
    none of numpy, scipy, scikit-image, pandas or omero: its ``--workers`` default needs
    the number of cores only."""
    code = ("import sys\nfrom openhcs_omero_lib.cli.app import build_parser\nbuild_parser()\n"
            "print(','.join(sorted({m.split('.')[0] for m in sys.modules}"
            " & {'numpy', 'scipy', 'skimage', 'pandas', 'omero', 'Ice'})))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
