"""How a sandbox service serves its ASGI app: one start, ready line and stop, shared by the catalogue, accounting
and trace services.

    def main(argv=None) -> int:
        args = parse_args(argv)
        stop_on_sigterm()  # first: SIGTERM while preparing stops as cleanly as SIGINT
        try:
            app = ...  # open databases, import the app
            started = serve(app, args.ip, args.port, "/api/status", f"desp_sandbox.NAME ready at http://...")
            return 0 if started else 1
        except KeyboardInterrupt:  # SIGINT/SIGTERM before uvicorn took over: the ordinary way to stop
            return 0

`serve` runs uvicorn, which installs its own SIGINT/SIGTERM handlers (graceful shutdown, then it returns), and
prints the ready line, the signal a launcher or a test waits for, once the app answers 200 on the given path.
"""

from __future__ import annotations

import signal
import threading
import urllib.error
import urllib.request


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def stop_on_sigterm() -> None:
    """Make SIGTERM raise KeyboardInterrupt, as SIGINT does, until uvicorn installs its own handlers."""
    signal.signal(signal.SIGTERM, _interrupt)


def local_url(ip: str, port: int) -> str:
    """The URL this machine reaches a server bound to `ip`:`port` at (a wildcard address becomes 127.0.0.1)."""
    host = "127.0.0.1" if ip in ("0.0.0.0", "") else ip
    return f"http://{host}:{port}"


def announce_when_ready(url: str, ready_line: str, stop: threading.Event, interval: float = 0.05) -> None:
    """Print `ready_line` once `url` answers 200, unless `stop` is set first."""
    while not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    print(ready_line, flush=True)
                    return
        except (urllib.error.URLError, OSError):
            pass
        stop.wait(interval)


def serve(app, ip: str, port: int, ready_path: str, ready_line: str, lifespan: str = "off") -> bool:
    """Serve `app` on `ip`:`port` until SIGINT/SIGTERM; print `ready_line` once GET `ready_path` answers 200.

    Returns whether uvicorn started (False when, say, the port was taken).
    """
    import uvicorn  # lazily: a service may import it in a worker thread while it prepares

    server = uvicorn.Server(uvicorn.Config(app, host=ip, port=port, log_level="warning", access_log=False,
                                           lifespan=lifespan))  # fmt: skip
    stop = threading.Event()
    threading.Thread(target=announce_when_ready, args=(local_url(ip, port) + ready_path, ready_line, stop),
                     daemon=True).start()  # fmt: skip
    try:
        server.run()  # handles SIGINT/SIGTERM: graceful shutdown, then returns
    finally:
        stop.set()
    return server.started
