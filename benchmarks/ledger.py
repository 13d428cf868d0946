"""Ledger throughput: DCU transactions per second with idempotency keys on SQLite, against plain inserts.

1. Store level (`desp_sandbox.accounting.ledger.Ledger`, no HTTP): N debits, each with a new idempotency key, spread
   over 50 accounts, each its own `BEGIN IMMEDIATE ... COMMIT` with the key lookup, the request hash and the
   balance_after computation, WAL mode, synchronous=NORMAL (what the service runs). Target >= 1000/s: PASS/FAIL.
   Baseline in the same run: plain SQLite inserts of the same rows, one transaction each, same pragmas, without the
   idempotency check or the balance (ratio = ledger / plain). For information: replays of keys already recorded
   (answered from the index), and the ledger with synchronous=FULL (an fsync per commit, durable against power loss).
2. Through HTTP (information): the sandbox service (`python -m desp_sandbox.accounting`, with the sandbox IdP for
   tokens) on a free port: N POSTs with a metering token, one client sequentially and 8 threads concurrently; the
   ratio to the store-level rate shows what HTTP + JSON + token checks cost.

Run alone: `.venv/bin/python benchmarks/ledger.py [--count N] [--http-count N] [--skip-http]`; or
`ledger_report()` from another script (`benchmarks/trace_ledger.py`): it prints each line as it goes (unless
`echo=False`) and returns the lines. Temporary directories and the processes it starts are removed / stopped by PID.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "sandbox", ROOT / "extensions"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from desp_sandbox.accounting.ledger import Ledger, normalize_transaction  # noqa: E402

TARGET_PER_SECOND = 1000
ACCOUNTS = 50


def _body(n: int) -> dict:
    return {"kind": "debit", "amount": Decimal(f"{(n % 997) + 1}") / 1000, "service": "jupyterhub",
            "profile": ("standard", "power", "ai")[n % 3], "session": f"user-{n % ACCOUNTS}//2026-01-01T00:00:00Z"}


def ledger_rate(directory: Path, count: int, synchronous: str = "NORMAL") -> tuple[float, float]:
    """(new transactions per second, replays per second) of the ledger store."""
    ledger = Ledger(directory / f"ledger-{synchronous.lower()}.sqlite", synchronous=synchronous)
    try:
        for n in range(ACCOUNTS):  # accounts exist beforehand: steady state, not account creation
            ledger.account(f"user-{n}")
        started = time.perf_counter()
        for n in range(count):
            ledger.record(f"user-{n % ACCOUNTS}", normalize_transaction(_body(n)), f"jupyterhub:user:{n}:0")
        new_rate = count / (time.perf_counter() - started)
        started = time.perf_counter()
        replays = min(count, 2000)
        for n in range(replays):
            _, replayed = ledger.record(f"user-{n % ACCOUNTS}", normalize_transaction(_body(n)),
                                        f"jupyterhub:user:{n}:0")  # fmt: skip
            assert replayed
        return new_rate, replays / (time.perf_counter() - started)
    finally:
        ledger.close()


def plain_rate(directory: Path, count: int) -> float:
    """Inserts per second of the same rows into a plain table, one transaction each, no idempotency or balance."""
    db = sqlite3.connect(directory / "plain.sqlite", isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE entries (id INTEGER PRIMARY KEY, user TEXT, kind TEXT, amount INTEGER, service TEXT,"
                   " profile TEXT, session TEXT, created TEXT)")  # fmt: skip
        started = time.perf_counter()
        for n in range(count):
            body = _body(n)
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO entries (user, kind, amount, service, profile, session, created) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (f"user-{n % ACCOUNTS}", body["kind"], int(body["amount"] * 1000), body["service"],
                        body["profile"], body["session"], "2026-01-01T00:00:00.000000Z"))  # fmt: skip
            db.execute("COMMIT")
        return count / (time.perf_counter() - started)
    finally:
        db.close()


def http_rates(directory: Path, count: int) -> tuple[float, float]:
    """(sequential, 8 threads) transactions per second through the sandbox service's HTTP API."""
    import requests

    from tests.conftest_accounting import AccountingProcess, SandboxAccounting
    from tests.conftest_idp import IdpProcess

    directory.mkdir(parents=True, exist_ok=True)
    idp = IdpProcess(directory).start()
    process = None
    try:
        process = AccountingProcess(directory / "service", idp.jwks_url, idp.issuer).start()
        token = SandboxAccounting(idp, process).meter_token()
        url = f"{process.url}/api/v1/accounts/%s/transactions"
        local = {}

        def post(n: int, prefix: str) -> None:
            import threading

            session = local.setdefault(threading.get_ident(), requests.Session())
            body = {**_body(n), "amount": str(_body(n)["amount"])}
            answer = session.post(url % f"user-{n % ACCOUNTS}", json=body, timeout=30,
                                  headers={"Authorization": f"Bearer {token}",
                                           "Idempotency-Key": f"{prefix}:{n}"})  # fmt: skip
            assert answer.status_code == 201, answer.text

        for n in range(20):  # warm-up: accounts created, connections open
            post(n, "warm")
        started = time.perf_counter()
        for n in range(count):
            post(n, "seq")
        sequential = count / (time.perf_counter() - started)
        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: post(n, "par"), range(count)))
        return sequential, count / (time.perf_counter() - started)
    finally:
        if process is not None:
            process.stop()
        idp.stop()


def ledger_report(count: int = 5000, http_count: int = 1000, http: bool = True, echo: bool = True) -> list[str]:
    """Measure (see the module's description) and return the report's lines (printed as they come if `echo`)."""
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        if echo:
            print(line, flush=True)

    directory = Path(tempfile.mkdtemp(prefix="desp-bench-ledger-"))
    try:
        say(f"ledger store (SQLite WAL, synchronous=NORMAL), {count} debits over {ACCOUNTS} accounts:")
        new_rate, replay_rate = ledger_rate(directory, count)
        plain = plain_rate(directory, count)
        verdict = "PASS" if new_rate >= TARGET_PER_SECOND else "FAIL"
        say(f"  with idempotency keys: {new_rate:8.0f} tx/s  (target >= {TARGET_PER_SECOND}/s: {verdict})")
        say(f"  plain inserts (baseline, no key check, no balance): {plain:8.0f} tx/s; ratio ledger/plain = "
            f"{new_rate / plain:.2f}")
        say(f"  replays of recorded keys: {replay_rate:8.0f} /s")
        full_rate, _ = ledger_rate(directory, min(count, 2000), synchronous="FULL")
        say(f"  with synchronous=FULL (fsync per commit), information: {full_rate:8.0f} tx/s")
        if http:
            sequential, parallel = http_rates(directory / "http", http_count)
            say(f"through HTTP (sandbox service, Bearer token checks), {http_count} debits, information:")
            say(f"  one client: {sequential:8.0f} tx/s; 8 threads: {parallel:8.0f} tx/s; "
                f"ratio HTTP (one client) / store = {sequential / new_rate:.2f}")
        say(f"summary (ledger): {verdict} ({new_rate:.0f} tx/s with idempotency keys, target >= {TARGET_PER_SECOND})")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="debits at the store level (default %(default)s)")
    parser.add_argument("--http-count", type=int, default=1000, help="debits through HTTP (default %(default)s)")
    parser.add_argument("--skip-http", action="store_true", help="only the store-level measurements")
    args = parser.parse_args()
    lines = ledger_report(args.count, args.http_count, http=not args.skip_http)
    return 0 if lines and "PASS" in lines[-1] else 1


if __name__ == "__main__":
    sys.exit(main())
