"""`python -m rockroll.cli` is `rockroll`."""

import sys

from rockroll.cli import main

sys.exit(main())
