"""`python -m desp_sandbox.catalogue`: run the sandbox STAC catalogue and cache (see `server.main`)."""

import sys

from .server import main

sys.exit(main())
