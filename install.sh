#!/usr/bin/env bash
# Set up openhcs-omero in .venv at the repository root: the package (editable), the
# test tools, and real omero-py, whose Ice dependency (zeroc-ice 3.6.5) has no binary
# wheel for Linux and is compiled from source once, then cached.
#
#   ./install.sh                 set up .venv (safe to re-run; seconds once cached)
#   PYTHON=python3.10 ./install.sh   choose the interpreter (3.10 to 3.12)
#
# On an OMERO server (run as the user that owns the server, not root):
#   ./install.sh --omero-server OMERODIR [--python SERVER_PYTHON] [--with-dask]
#       installs the library into the server's Python and the scripts under
#       OMERODIR/lib/scripts/omero/openhcs/; --with-dask adds Dask and dask-jobqueue
#       (for runs on a Dask cluster: README, On a Dask cluster)
#   ./install.sh --omero-server OMERODIR --uninstall [--python SERVER_PYTHON]
#   ./install.sh --print-upload  the 'omero script upload' commands instead
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv="$here/.venv"
ice_version=3.6.5
cache="${XDG_CACHE_HOME:-$HOME/.cache}/openhcs-omero/wheels"

build_dirs=()
cleanup() { [ ${#build_dirs[@]} -eq 0 ] || rm -rf "${build_dirs[@]}"; }
trap cleanup EXIT

say() { printf '==> %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

supported() { "$1" -c 'import sys; sys.exit(not (3,10) <= sys.version_info[:2] <= (3,12))' >/dev/null 2>&1; }

pick_python() {
    if [ -n "${PYTHON:-}" ]; then
        supported "$PYTHON" || die "PYTHON=$PYTHON is not a working Python 3.10, 3.11 or 3.12"
        echo "$PYTHON"; return
    fi
    for p in python3 python3.12 python3.11 python3.10; do
        if command -v "$p" >/dev/null 2>&1 && supported "$p"; then
            echo "$p"; return
        fi
    done
    die "no Python 3.10, 3.11 or 3.12 found (set PYTHON=/path/to/python3.x)"
}

system_packages() {
    # Only what compiling zeroc-ice needs; skipped when present or when not root.
    local missing=()
    for pkg in libssl-dev libbz2-dev g++; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing system packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        say "warning: ${missing[*]} not installed; building zeroc-ice may fail (install them as root)"
    fi
}

ensure_ice() {
    if "$venv/bin/python" -c 'import Ice' >/dev/null 2>&1; then
        say "Ice already importable: $("$venv/bin/python" -c 'import Ice; print(Ice.stringVersion())')"
        return
    fi
    local tag wheel
    tag=$("$venv/bin/python" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
    wheel=$(ls "$cache"/zeroc_ice-"$ice_version"-"$tag"-*.whl 2>/dev/null | head -n 1 || true)
    if [ -z "$wheel" ]; then
        build_ice_wheel
        wheel=$(ls "$cache"/zeroc_ice-"$ice_version"-"$tag"-*.whl 2>/dev/null | head -n 1 || true)
        [ -n "$wheel" ] || die "zeroc-ice build produced no wheel for $tag"
    else
        say "using cached zeroc-ice wheel $(basename "$wheel")"
    fi
    "$venv/bin/pip" install -q --no-deps "$wheel"
}

build_ice_wheel() {
    system_packages
    local work
    work=$(mktemp -d)
    build_dirs+=("$work")
    say "building zeroc-ice $ice_version from source (5-10 minutes, once; cached in $cache)"
    "$venv/bin/pip" download -q --no-deps --no-binary :all: -d "$work" "zeroc-ice==$ice_version"
    tar -xzf "$work"/zeroc-ice-"$ice_version".tar.gz -C "$work"
    "$venv/bin/python" "$here/tools/patch_zeroc_ice.py" "$work/zeroc-ice-$ice_version"
    # The compiler's output goes to a log: it is long, and only useful on failure.
    if ! "$venv/bin/pip" wheel --no-build-isolation --no-deps -w "$work/dist" \
            "$work/zeroc-ice-$ice_version" >"$work/build.log" 2>&1; then
        tail -n 40 "$work/build.log" >&2
        die "building zeroc-ice failed (last lines above)"
    fi
    mkdir -p "$cache"
    cp "$work"/dist/zeroc_ice-*.whl "$cache"/
}

scripts_src() { echo "$here/scripts/omero/openhcs"; }

server_python() {
    local omerodir=$1 py=${2:-}
    if [ -z "$py" ]; then
        for candidate in "$omerodir/../venv3/bin/python" "$omerodir/venv3/bin/python"; do
            [ -x "$candidate" ] && { py=$candidate; break; }
        done
    fi
    if [ -z "$py" ] && command -v omero >/dev/null 2>&1; then
        py=$(head -n 1 "$(command -v omero)" | sed -n 's/^#! *//p' | awk '{print $1}')
    fi
    [ -n "$py" ] || die "cannot tell the OMERO server's Python: give --python /path/to/server/venv/bin/python"
    "$py" -c 'import omero, Ice' >/dev/null 2>&1 || die "$py cannot import omero and Ice: is it the server's Python?"
    echo "$py"
}

server_mode() {
    local omerodir="" py="" uninstall=0 package="$here"
    while [ $# -gt 0 ]; do
        case "$1" in
            --omero-server) omerodir=${2:-}; shift 2 ;;
            --python) py=${2:-}; shift 2 ;;
            --uninstall) uninstall=1; shift ;;
            --with-dask) package="$here[dask]"; shift ;;
            *) die "unknown argument: $1 (see the top of install.sh)" ;;
        esac
    done
    [ -n "$omerodir" ] || die "--omero-server needs the server's directory (OMERODIR)"
    [ -d "$omerodir/lib/scripts" ] || die "$omerodir has no lib/scripts: not an OMERO.server directory"
    local dest="$omerodir/lib/scripts/omero/openhcs"
    py=$(server_python "$omerodir" "$py")
    if [ "$uninstall" -eq 1 ]; then
        say "removing $dest and the openhcs-omero package from $py"
        rm -rf "$dest"
        "$py" -m pip uninstall -y -q openhcs-omero || true
        say "done; the server forgets the scripts at its next script scan (or: omero script list)"
        return
    fi
    say "installing openhcs-omero into the server's Python ($py)"
    "$py" -m pip install -q "$package"
    say "copying the scripts to $dest"
    mkdir -p "$dest"
    cp "$(scripts_src)"/*.py "$dest"/
    say "done. Try: omero script launch $(ls "$dest"/Run_HCS_Pipeline.py) Data_Type=Plate IDs=<plate id>"
}

print_upload() {
    # The path given to --official is where the server files the script under lib/scripts.
    echo "cd \"$here/scripts\""
    for f in "$(scripts_src)"/*.py; do
        echo "omero script upload --official omero/openhcs/$(basename "$f")"
    done
}

main() {
    case "${1:-}" in
        --omero-server) server_mode "$@"; return ;;
        --print-upload) print_upload; return ;;
        "") ;;
        *) die "unknown argument: $1 (see the top of install.sh)" ;;
    esac
    local py
    py=$(pick_python)
    if [ ! -x "$venv/bin/python" ]; then
        say "creating $venv with $py ($("$py" --version 2>&1))"
        "$py" -m venv "$venv"
    fi
    say "updating pip, setuptools, wheel"
    "$venv/bin/pip" install -q --upgrade pip setuptools wheel
    ensure_ice
    say "installing openhcs-omero (editable) with omero-py and the test tools (Dask among them)"
    "$venv/bin/pip" install -q -e "$here[test]"
    "$venv/bin/python" -c 'import importlib.metadata, omero, Ice, openhcs_omero_lib; print("omero-py", importlib.metadata.version("omero-py"), "Ice", Ice.stringVersion(), "openhcs-omero", openhcs_omero_lib.__version__)'
    say "done: try  .venv/bin/openhcs-omero run --demo"
}

main "$@"
