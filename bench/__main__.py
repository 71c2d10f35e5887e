"""``python -m bench [options]``: see ``python -m bench --help``."""

import sys

from openhcs_omero_lib.bench import main

if __name__ == "__main__":
    sys.exit(main())
