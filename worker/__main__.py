"""`python -m worker` runs the CLI."""

import sys

from worker.cli import main

sys.exit(main())
