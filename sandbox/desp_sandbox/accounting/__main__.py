"""`python -m desp_sandbox.accounting`: run the sandbox accounting service (see `server.main`)."""

import sys

from .server import main

sys.exit(main())
