"""Everything the catalogue stores goes through pgstac: schema migration, collection/item upserts, queryables.

Synchronous (pypgstac + psycopg) and used at start-up, before the web server runs. Orders, written while the server
runs, use the same pgstac SQL functions over the web app's asyncpg pool (see `orders.py`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable

from pypgstac.db import PgstacDB
from pypgstac.load import Loader, Methods
from pypgstac.migrate import Migrate

log = logging.getLogger("desp_sandbox.catalogue.database")

# hrefs into this server, as stored in an earlier run (another port): rebased at every start.
_OWN_HREF = re.compile(r'"http://[^/"]+/(cache|stac/v2)/')


def migrate(dsn: str) -> str:
    """Install or upgrade the pgstac schema (a no-op when it is current); returns the version."""
    with PgstacDB(dsn=dsn) as db:
        return Migrate(db).run_migration()


def configure(dsn: str) -> None:
    """pgstac settings: count matches (`numberMatched` in search results; the catalogue is small)."""
    with PgstacDB(dsn=dsn) as db:
        connection = db.connect()
        connection.execute(
            "INSERT INTO pgstac_settings (name, value) VALUES ('context', 'on') "
            "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value"
        )
        connection.commit()


def upsert(dsn: str, collections: list[dict], items: list[dict]) -> None:
    """Insert or replace the collections, then the items (pypgstac's Loader, upsert mode)."""
    with PgstacDB(dsn=dsn) as db:
        loader = Loader(db=db)
        loader.load_collections(iter(collections), Methods.upsert)
        loader.load_items(iter(items), Methods.upsert)


def register_queryables(dsn: str, queryables: dict[str, dict]) -> None:
    """Register each collection's queryables ({collection_id: JSON schema}) with pgstac's upsert_queryables.

    pgstac picks the SQL wrapper from the JSON type (number → to_float, integer → to_int), so numeric properties
    compare and sort as numbers, not as text.
    """
    with PgstacDB(dsn=dsn) as db:
        connection = db.connect()
        for collection_id, schema in queryables.items():
            connection.execute(
                "SELECT upsert_queryables(%s::jsonb, %s::text[], NULL, false)", [json.dumps(schema), [collection_id]]
            )
        connection.commit()


def stored_items(dsn: str, collection_id: str) -> list[dict]:
    """Every item of a collection as stored (hydrated by pgstac's get_item)."""
    with PgstacDB(dsn=dsn) as db:
        rows = db.query("SELECT get_item(id, collection) FROM items WHERE collection = %s ORDER BY id", [collection_id])
        return [row[0] for row in rows]


def rebase_hrefs(items: Iterable[dict], base_url: str) -> list[dict]:
    """Items whose links/assets pointed at this server under an earlier address, pointed at `base_url` now."""
    rebased = []
    for item in items:
        text = json.dumps(item)
        moved = _OWN_HREF.sub(lambda match: f'"{base_url}/{match.group(1)}/', text)
        if moved != text:
            rebased.append(json.loads(moved))
    return rebased


def upsert_items(dsn: str, items: list[dict]) -> None:
    if not items:
        return
    with PgstacDB(dsn=dsn) as db:
        Loader(db=db).load_items(iter(items), Methods.upsert)
