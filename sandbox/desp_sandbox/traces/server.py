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
import signal
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

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


def announce_when_ready(url: str, public: str, stop: threading.Event) -> None:
    """Print the ready line once `url` answers 200."""
    while not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    print(f"desp_sandbox.traces ready at {public}", flush=True)
                    return
        except (urllib.error.URLError, OSError):
            pass
        stop.wait(0.05)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # until uvicorn installs its own handlers: stop cleanly while starting
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import uvicorn

        from .app import create_app

        app = create_app(args.data_dir.resolve(), args.jwks_url, args.issuer)
        server = uvicorn.Server(uvicorn.Config(app, host=args.ip, port=args.port, log_level="warning",
                                               access_log=False, lifespan="off"))  # fmt: skip
        local_host = "127.0.0.1" if args.ip in ("0.0.0.0", "") else args.ip
        stop = threading.Event()
        threading.Thread(target=announce_when_ready, daemon=True,
                         args=(f"http://{local_host}:{args.port}/api/status", f"http://{args.ip}:{args.port}",
                               stop)).start()  # fmt: skip
        server.run()  # handles SIGINT/SIGTERM: graceful shutdown, then returns
        stop.set()
        app.state.store.close()
        return 0 if server.started else 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
