"""`python -m desp_sandbox.idp`: run the sandbox IdP (see `server.main`)."""

import sys

from .server import main

sys.exit(main())
