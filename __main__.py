"""``python -m wirespeed``: the same command line as the ``wirespeed`` script (:mod:`wirespeed.host.tools.cli`)."""

import sys

from .host.tools.cli import main

if __name__ == "__main__":
    sys.exit(main())
