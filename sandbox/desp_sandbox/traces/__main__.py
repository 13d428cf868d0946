"""`python -m desp_sandbox.traces`: run the sandbox trace service (see `server.main`)."""

import sys

from .server import main

sys.exit(main())
