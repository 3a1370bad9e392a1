"""`python -m sysplan` runs the command line."""

import sys

from sysplan.cli.main import main

sys.exit(main())
