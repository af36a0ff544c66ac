"""`python -m callrec` runs the CLI."""

import sys

from callrec.cli import main

sys.exit(main())
