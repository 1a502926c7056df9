"""`python -m rockroll` is `rockroll`."""

import sys

from rockroll.cli import main

sys.exit(main())
