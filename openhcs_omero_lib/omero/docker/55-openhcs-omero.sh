#!/bin/bash
# Installs openhcs-omero for the OMERO.server container's Python and copies its OMERO scripts.
#
# Mounted into /startup/ by ../docker-compose.yml. Assumptions about the official
# openmicroscopy/omero-server image (OMERO 5.6, from its Dockerfile, entrypoint and the
# ome.omero_server Ansible role it is built with):
# - the entrypoint runs every executable in /startup/ in name order, as the unprivileged
#   omero-server user with /opt/omero/server/venv3 activated, and stops if one fails;
#   99-run.sh then starts the server;
# - venv3 (omero-py, zeroc-ice) belongs to root, so the package goes to $OPENHCS_OMERO_SITE,
#   a folder of the server's var/ volume that the compose file puts on PYTHONPATH;
# - OMERO.server/lib/scripts belongs to omero-server.
# Needs network access to the Python package index on the first start (numpy, scipy,
# scikit-image, ...); later starts reinstall only openhcs-omero itself, so edits in the
# mounted source take effect on `docker compose restart omero-server`.
set -euo pipefail

src=${OPENHCS_OMERO_SRC:-/opt/openhcs-omero/src}
site=${OPENHCS_OMERO_SITE:?OPENHCS_OMERO_SITE is not set (see docker-compose.yml)}
# Overridable for images laid out differently (and for testing this script).
python=${OPENHCS_OMERO_SERVER_PYTHON:-/opt/omero/server/venv3/bin/python}
scripts=${OPENHCS_OMERO_SCRIPTS_DIR:-/opt/omero/server/OMERO.server/lib/scripts/omero/openhcs}

say() { echo "55-openhcs-omero: $*"; }
die() { say "error: $*" >&2; exit 1; }

[ -f "$src/pyproject.toml" ] && [ -d "$src/scripts/omero/openhcs" ] \
    || die "$src is not an openhcs-omero source checkout (set OPENHCS_OMERO_SOURCE on the host)"
case ":${PYTHONPATH:-}:" in
    *":$site:"*) ;;
    *) die "PYTHONPATH must contain $site, or the scripts cannot import the package" ;;
esac
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "openhcs-omero needs Python 3.10 or newer; this image's server Python is older"

# pip builds inside the source folder, and the mount is read-only: build from a copy.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$src/pyproject.toml" "$src/README.md" "$src/openhcs_omero_lib" "$work/"

# The dependencies minus the server's own omero-py and zeroc-ice, which must not be replaced.
deps=$("$python" - "$work/pyproject.toml" <<'PY'
import re
import sys
import tomllib

with open(sys.argv[1], "rb") as fh:
    requirements = tomllib.load(fh)["project"]["dependencies"]
for requirement in requirements:
    name = re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")
    if name not in ("omero-py", "zeroc-ice"):
        print(requirement)
PY
)

pip() { "$python" -m pip --disable-pip-version-check --no-cache-dir "$@"; }
stamp="$site/.openhcs-omero-dependencies"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$deps" ]; then
    say "installing the dependencies into $site"
    rm -rf "$site"
    mapfile -t requirements <<<"$deps"
    pip install -q --target "$site" "${requirements[@]}"
    printf '%s' "$deps" > "$stamp"
fi
say "installing openhcs-omero into $site"
pip install -q --no-deps --upgrade --target "$site" "$work"
(cd / && "$python" -c 'import openhcs_omero_lib.omero.script_support') \
    || die "the server's Python cannot import openhcs-omero from $site"

say "copying the scripts to $scripts"
mkdir -p "$scripts"
cp "$src"/scripts/omero/openhcs/*.py "$scripts/"
