"""Make the zeroc-ice 3.6.5 sources build and import on Python 3.11 and 3.12.

omero-py pins ``zeroc-ice>=3.6.5,<3.7``; only a source distribution exists for it,
and its sources predate three CPython changes:

1. 3.11 removed ``eval.h``: ``src/Slice.cpp`` includes it but uses nothing from it.
2. 3.11 hid ``PyThreadState.frame``: ``IcePy::getFunction`` reads it to name the
   calling function; the public ``PyThreadState_GetFrame``/``PyFrame_GetCode``
   (3.9+) give the same answer.
3. 3.12 removed the ``imp`` module: ``Ice.py`` uses only ``imp.new_module``, which
   ``types.ModuleType`` replaces.

Each fix is guarded so that the patched tree still builds on 3.10, and applying the
patch twice changes nothing.

Usage: ``python patch_zeroc_ice.py SOURCE_DIR``
"""

from __future__ import annotations

import sys
from pathlib import Path

_OLD_FRAME = """    PyFrameObject *f = PyThreadState_GET()->frame;
    PyObjectHandle code = PyObject_GetAttrString(reinterpret_cast<PyObject*>(f), STRCAST("f_code"));
"""
_NEW_FRAME = """#if PY_VERSION_HEX >= 0x03090000
    PyFrameObject *f = PyThreadState_GetFrame(PyThreadState_GET());
    PyObjectHandle code(reinterpret_cast<PyObject*>(PyFrame_GetCode(f)));
    Py_XDECREF(f);
#else
    PyFrameObject *f = PyThreadState_GET()->frame;
    PyObjectHandle code = PyObject_GetAttrString(reinterpret_cast<PyObject*>(f), STRCAST("f_code"));
#endif
"""


def _replace(path: Path, old: str, new: str) -> bool:
    text = path.read_text()
    if new in text:
        return False
    if old not in text:
        raise SystemExit(f"patch_zeroc_ice: {path.name}: expected text not found; "
                         "is this zeroc-ice 3.6.5?")
    path.write_text(text.replace(old, new))
    return True


def patch(source_dir: Path) -> list[str]:
    """Apply the fixes in place; return the names of the files changed."""
    changed = []
    slice_cpp = source_dir / "src" / "Slice.cpp"
    text = slice_cpp.read_text()
    if "#include <eval.h>\n" in text:
        slice_cpp.write_text(text.replace("#include <eval.h>\n", ""))
        changed.append("src/Slice.cpp")
    if _replace(source_dir / "src" / "Util.cpp", _OLD_FRAME, _NEW_FRAME):
        changed.append("src/Util.cpp")
    ice_py = source_dir / "lib" / "Ice.py"
    text = ice_py.read_text()
    if "imp.new_module(" in text:
        text = text.replace("import sys, string, imp, os,", "import sys, string, types, os,")
        text = text.replace("imp.new_module(", "types.ModuleType(")
        ice_py.write_text(text)
        changed.append("lib/Ice.py")
    return changed


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    for name in patch(Path(sys.argv[1])):
        print(f"patched {name}")
