"""``python -m openhcs_omero_lib.cli``: the ``openhcs-omero`` command."""

import sys

from openhcs_omero_lib.cli.app import main

sys.exit(main())
