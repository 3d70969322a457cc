"""`python -m gateway.cli`: the `ledgerhook` command without the installed script."""

import sys

from gateway.cli.main import main

sys.exit(main())
