"""Command line of the sandbox catalogue: data, database, web server, in that order, and a clean stop.

    python -m desp_sandbox.catalogue --ip 127.0.0.1 --port 8190 --data-dir /var/tmp/desp \\
        --jwks-url http://127.0.0.1:8180/realms/desp/protocol/openid-connect/certs \\
        [--issuer http://127.0.0.1:8180/realms/desp]

1. sample data is generated into DATA_DIR/cache unless present (in a thread, while the database starts);
2. a private PostgreSQL cluster in DATA_DIR/catalogue/pg starts on a free port (initdb on first use only), pypgstac
   migrates it, the collections and items are upserted (hrefs follow this run's address), queryables registered;
3. uvicorn serves the app on IP:PORT; the line `DESP catalogue ready at http://IP:PORT/stac/v2` is printed once
   the API answers. SIGTERM/SIGINT stop uvicorn, then the cluster (by its PID).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..serving import local_url, serve, stop_on_sigterm
from . import database, records, sample_data
from .cluster import Cluster, ClusterError
from .datasets import EXTREMES_COLLECTION

log = logging.getLogger("desp_sandbox.catalogue")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m desp_sandbox.catalogue",
        description="Run the DESP sandbox catalogue: a STAC API (stac-fastapi-pgstac) at /stac/v2 and the "
        "token-protected sample-data cache at /cache/, on one port.",
        epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ip", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, required=True, help="TCP port of the STAC API and the cache")
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="state directory: sample data in DATA_DIR/cache, PostgreSQL in DATA_DIR/catalogue/pg")
    parser.add_argument("--jwks-url", required=True,
                        help="JWKS of the IdP whose tokens the cache and the order endpoint accept")
    parser.add_argument("--issuer", default=None, help="required `iss` of those tokens (default: not checked)")
    parser.add_argument("--public-url", default=None,
                        help="base URL in asset hrefs and links (default: http://IP:PORT)")
    parser.add_argument("--order-delay", type=float, default=2.0,
                        help="seconds an order stays 'ordered' before its data is produced (default: %(default)s)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default: %(default)s)")
    return parser.parse_args(argv)


def seed(dsn: str, base_url: str) -> None:
    """Migrate, upsert the static records, register queryables, rebase stored orders onto `base_url`."""
    started = time.monotonic()
    version = database.migrate(dsn)
    database.configure(dsn)
    database.upsert(dsn, records.collections(), records.items(base_url))
    database.register_queryables(dsn, records.queryables())
    database.upsert_items(dsn, database.rebase_hrefs(database.stored_items(dsn, EXTREMES_COLLECTION), base_url))
    log.info("pgstac %s seeded in %.1fs", version, time.monotonic() - started)


def _import_app():
    """Import uvicorn and the app (FastAPI, stac-fastapi: seconds of imports), for a worker thread.

    jsonschema imports the optional IRI checker `rfc3987_syntax` when it is installed, which builds a parser at
    import time (~4 s here); nothing in the catalogue checks IRI formats, so that optional import is declined.
    """
    sys.modules.setdefault("rfc3987_syntax", None)  # None in sys.modules: `import` raises ImportError
    import uvicorn  # noqa: F401 (imported here, off the main thread; serving.serve uses it)

    from .app import create_app

    return create_app


def main(argv=None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()  # before uvicorn takes over: stop cleanly while preparing too
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    data_dir = args.data_dir.resolve()
    cache_dir = data_dir / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    base_url = (args.public_url or f"http://{args.ip}:{args.port}").rstrip("/")
    cluster = Cluster(data_dir / "catalogue" / "pg")
    try:
        with ThreadPoolExecutor(2) as pool:  # the slow imports and the data beside the database start
            importing = pool.submit(_import_app)
            generating = pool.submit(sample_data.generate, cache_dir)
            cluster.start()
            seed(cluster.dsn(), base_url)
            create_app = importing.result()
            generating.result()
        log.info("catalogue prepared in %.1fs", time.monotonic() - started)
        app = create_app(cluster.port, base_url, cache_dir, args.jwks_url, args.issuer, args.order_delay)
        ready_line = f"DESP catalogue ready at {local_url(args.ip, args.port)}{records.PREFIX}"
        return 0 if serve(app, args.ip, args.port, f"{records.PREFIX}/", ready_line, lifespan="on") else 1
    except ClusterError as error:
        log.error("%s", error)
        return 2
    except KeyboardInterrupt:  # SIGINT/SIGTERM: the ordinary way to stop a server
        return 0
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
