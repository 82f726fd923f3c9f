"""`python -m fusionedge.cli`: the console script without its installed entry point
(torchrun starts training this way)."""

import sys

from fusionedge.cli import main

sys.exit(main())
