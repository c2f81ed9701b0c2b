"""Run the `authz` command line."""

import sys

from authz.cli import main

sys.exit(main())
