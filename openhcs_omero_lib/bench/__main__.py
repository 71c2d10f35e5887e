"""``python -m openhcs_omero_lib.bench``"""

import sys

from openhcs_omero_lib.bench import main

if __name__ == "__main__":
    sys.exit(main())
