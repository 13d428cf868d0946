"""Command line of the sandbox trace service.

    python -m desp_sandbox.traces --ip 127.0.0.1 --port 8192 --data-dir /var/tmp/desp \\
        --jwks-url http://127.0.0.1:8180/realms/desp/protocol/openid-connect/certs \\
        [--issuer http://127.0.0.1:8180/realms/desp]

Traces are kept in DATA_DIR/traces/traces.sqlite (created on first use, kept across restarts). Once the API
answers, the line `desp_sandbox.traces ready at http://IP:PORT` is printed. SIGTERM or SIGINT stop it cleanly
(exit status 0).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..serving import serve, stop_on_sigterm

log = logging.getLogger("desp_sandbox.traces")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m desp_sandbox.traces",
        description="Run the DESP sandbox trace service (the Copernicus traceability API's shape) on one port.",
        epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--ip", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, required=True, help="TCP port of the API")
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="state directory: the SQLite database is DATA_DIR/traces/traces.sqlite")  # fmt: skip
    parser.add_argument("--jwks-url", required=True, help="JWKS of the IdP whose Bearer tokens the API accepts")
    parser.add_argument("--issuer", default=None, help="required `iss` of those tokens (default: not checked)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()  # until uvicorn installs its own handlers: stop cleanly while starting
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from .app import create_app

        app = create_app(args.data_dir.resolve(), args.jwks_url, args.issuer)
        started = serve(app, args.ip, args.port, "/api/status",
                        f"desp_sandbox.traces ready at http://{args.ip}:{args.port}")  # fmt: skip
        app.state.store.close()
        return 0 if started else 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
