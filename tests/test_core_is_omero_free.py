"""The engine runs without omero-py: only openhcs_omero_lib.omero and .testing import it."""

import subprocess
import sys

CORE = ["layout", "virtual_backend", "imagexpress", "synthetic", "pixels", "executor", "results",
        "engine", "cli", "cli_jobs", "cli_server", "progress", "pipeline.spec", "pipeline.loading", "pipeline.ops", "pipeline.run", "presets",
        "pipeline.outlines", "pictures", "pictures.heatmap", "pictures.montage"]
CORE += ["pipeline.params", "running", "api"]  # the Python API: omero only when first used


def test_core_modules_do_not_import_omero():
    code = ("import sys\n"
            + "".join(f"import openhcs_omero_lib.{m}\n" for m in CORE)
            + "bad = sorted(m for m in sys.modules if m == 'omero' or m.startswith('omero.') or m == 'Ice')\n"
            "print(','.join(bad))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
