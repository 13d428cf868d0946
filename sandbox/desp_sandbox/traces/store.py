"""Trace storage in SQLite: plain SQL, no web and no validation (the app checks traces before they reach here).

Tables: `traces` (one row per trace; indexes on `product_hash` and `product_name`), `trace_contents` (member
files of a directory product, in the order given) and `trace_inputs` (the products it was made from; index on
their hash). `seq` is the insertion order: "newest first" means highest `seq` first, which does not depend on the
clock. A batch is stored in one transaction: all of it or nothing.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS traces (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    timestamp TEXT NOT NULL,
    origin TEXT NOT NULL,
    event TEXT NOT NULL,
    hash_algorithm TEXT NOT NULL,
    product_name TEXT NOT NULL,
    product_size INTEGER NOT NULL,
    product_hash TEXT NOT NULL,
    signature TEXT
);
CREATE INDEX IF NOT EXISTS traces_product_hash ON traces (product_hash);
CREATE INDEX IF NOT EXISTS traces_product_name ON traces (product_name);
CREATE TABLE IF NOT EXISTS trace_contents (
    trace_seq INTEGER NOT NULL REFERENCES traces (seq),
    position INTEGER NOT NULL,
    path TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (trace_seq, position)
);
CREATE TABLE IF NOT EXISTS trace_inputs (
    trace_seq INTEGER NOT NULL REFERENCES traces (seq),
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (trace_seq, position)
);
CREATE INDEX IF NOT EXISTS trace_inputs_hash ON trace_inputs (hash);
"""

COLUMNS = "seq, id, timestamp, origin, event, hash_algorithm, product_name, product_size, product_hash, signature"


class TraceStore:
    """The trace tables in the SQLite file at `path` (created with its parents on first use)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()  # one connection per thread (FastAPI runs sync routes in a thread pool)
        with self._connection() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30)
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def add(self, traces: Iterable[dict]) -> None:
        """Insert complete traces (`id`, `timestamp`, `origin` set) in one transaction."""
        with self._connection() as db:
            for trace in traces:
                product = trace["product"]
                signature = trace.get("signature")
                cursor = db.execute(
                    f"INSERT INTO traces ({COLUMNS.partition(', ')[2]}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (trace["id"], trace["timestamp"], trace["origin"], trace["event"], trace["hash_algorithm"],
                     product["name"], product["size"], product["hash"],
                     json.dumps(signature) if signature is not None else None),
                )  # fmt: skip
                seq = cursor.lastrowid
                db.executemany(
                    "INSERT INTO trace_contents (trace_seq, position, path, hash) VALUES (?, ?, ?, ?)",
                    [(seq, i, member["path"], member["hash"]) for i, member in enumerate(product.get("contents", []))],
                )
                db.executemany(
                    "INSERT INTO trace_inputs (trace_seq, position, name, hash) VALUES (?, ?, ?, ?)",
                    [(seq, i, item["name"], item["hash"]) for i, item in enumerate(product.get("inputs", []))],
                )

    def by_id(self, trace_id: str) -> dict | None:
        found = self._select("WHERE id = ?", (trace_id,))
        return found[0] if found else None

    def by_name(self, name: str) -> list[dict]:
        """Every trace of the product `name`, newest first."""
        return self._select("WHERE product_name = ? ORDER BY seq DESC", (name,))

    def by_hash(self, product_hash: str) -> list[dict]:
        """Every trace whose product hash is `product_hash` (lower-case hex), newest first."""
        return self._select("WHERE product_hash = ? ORDER BY seq DESC", (product_hash,))

    def count(self) -> int:
        return self._connection().execute("SELECT count(*) FROM traces").fetchone()[0]

    def _select(self, where: str, parameters: tuple) -> list[dict]:
        db = self._connection()
        rows = db.execute(f"SELECT {COLUMNS} FROM traces {where}", parameters).fetchall()
        traces = []
        for seq, trace_id, timestamp, origin, event, algorithm, name, size, product_hash, signature in rows:
            contents = db.execute(
                "SELECT path, hash FROM trace_contents WHERE trace_seq = ? ORDER BY position", (seq,)
            ).fetchall()
            inputs = db.execute(
                "SELECT name, hash FROM trace_inputs WHERE trace_seq = ? ORDER BY position", (seq,)
            ).fetchall()
            trace = {
                "id": trace_id, "timestamp": timestamp, "origin": origin, "event": event, "hash_algorithm": algorithm,
                "product": {"name": name, "size": size, "hash": product_hash,
                            "contents": [{"path": p, "hash": h} for p, h in contents],
                            "inputs": [{"name": n, "hash": h} for n, h in inputs]},
            }  # fmt: skip
            if signature is not None:
                trace["signature"] = json.loads(signature)
            traces.append(trace)
        return traces

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
