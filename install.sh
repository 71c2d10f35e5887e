#!/usr/bin/env bash
# Set up openhcs-omero in .venv at the repository root: the package (editable), the
# test tools, and real omero-py, whose Ice dependency (zeroc-ice 3.6.5) has no binary
# wheel for Linux and is compiled from source once, then cached.
#
#   ./install.sh                 set up .venv (safe to re-run; seconds once cached)
#   PYTHON=python3.10 ./install.sh   choose the interpreter (3.10 to 3.12)
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

pick_python() {
    if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
    for p in python3 python3.12 python3.11 python3.10; do
        if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import sys; sys.exit(not (3,10) <= sys.version_info[:2] <= (3,12))' 2>/dev/null; then
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

main() {
    local py
    py=$(pick_python)
    if [ ! -x "$venv/bin/python" ]; then
        say "creating $venv with $py ($("$py" --version 2>&1))"
        "$py" -m venv "$venv"
    fi
    say "updating pip, setuptools, wheel"
    "$venv/bin/pip" install -q --upgrade pip setuptools wheel
    ensure_ice
    say "installing openhcs-omero (editable) with omero-py and the test tools"
    "$venv/bin/pip" install -q -e "$here[test]"
    "$venv/bin/python" -c 'import importlib.metadata, omero, Ice, openhcs_omero_lib; print("omero-py", importlib.metadata.version("omero-py"), "Ice", Ice.stringVersion(), "openhcs-omero", openhcs_omero_lib.__version__)'
    say "done: try  .venv/bin/openhcs-omero run --demo"
}

main "$@"
