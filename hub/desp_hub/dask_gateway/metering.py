"""Worker-hours of Dask clusters as DCU debits, each recorded once.

A Dask worker costs `dcu_per_core_hour * worker_cores` DCU per hour from its creation to its stop, debited like the
hub's servers (`desp_hub.metering`): interval by interval while it runs (every complete interval of
`interval_seconds` counted from its start is one debit, keyed `dask-gateway:{user}:{cluster}:{worker}:{i}`) and, when
it stops (scaled down, or its cluster stopped), the partial interval since the last complete one (`...:final`).
Amounts are in milli-DCU rounded as the hub's (`amount_milli`). Keys depend only on the worker and the interval, so
a retry, a second stop notice or a gateway restart never debits twice: the outbox is unique on the key, and the
accounting service answers a replayed key with the first transaction.

The debit goes first into a durable outbox (table `dask_usage_outbox`, its own SQLite/PostgreSQL database next to
the hub's), then to the accounting service with `desp_hub.metering.deliver_pending` (the hub's delivery: oldest
first, kept while the service is down, rejected rows logged), as the metering service's client (`desp-metering`,
client credentials).
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import sqlalchemy as sa
from decimal import Decimal

from desp_hub.metering import (
    DebitOutbox,
    QueuedDebit,
    debit_columns,
    amount_milli,
    iso,
    price_text,
    seconds_between,
    complete_intervals,
    interval_bounds,
    utc,
)

#: The `service` field of the transactions.
SERVICE = "dask-gateway"

metadata = sa.MetaData()

usage_table = sa.Table(
    "dask_worker_debits",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("idempotency_key", sa.String(600), nullable=False),
    sa.Column("username", sa.String(255), nullable=False),
    sa.Column("cluster", sa.String(255), nullable=False),
    sa.Column("worker", sa.String(255), nullable=False),
    sa.Column("worker_cores", sa.Integer, nullable=False),
    sa.Column("dcu_per_core_hour", sa.String(32), nullable=False),
    *debit_columns(),
    sa.UniqueConstraint("idempotency_key", name="uq_dask_usage_key"),
    sa.Index("ix_dask_usage_status", "status", "id"),
)


def usage_key(username: str, cluster: str, worker: str, index: int | None) -> str:
    """The idempotency key of interval `index` of a worker (None: the final partial interval, `...:final`)."""
    return f"{SERVICE}:{username}:{cluster}:{worker}:{'final' if index is None else int(index)}"


def from_millis(value: int) -> datetime.datetime:
    """A dask-gateway timestamp (milliseconds since the epoch) as an aware UTC datetime."""
    return datetime.datetime.fromtimestamp(value / 1000, datetime.UTC)


@dataclasses.dataclass(frozen=True)
class UsageRow(QueuedDebit):
    """One worker's queued debit."""

    cluster: str
    worker: str
    worker_cores: int
    dcu_per_core_hour: str

    def transaction(self) -> dict[str, Any]:
        """The transaction's fields besides user, kind, amount and key (the same at every retry)."""
        seconds = seconds_between(self.period_start, self.period_end)
        return {
            "service": SERVICE,
            "session": f"{SERVICE}/{self.cluster}",
            "description": f"Dask worker {self.worker} of cluster {self.cluster} ({self.worker_cores} core"
            f"{'s' if self.worker_cores != 1 else ''}), "
            f"{'final partial interval' if self.interval_index is None else f'interval {self.interval_index}'}",
            "period_start": iso(self.period_start),
            "period_end": iso(self.period_end),
            "metadata": {
                "cluster": self.cluster,
                "worker": self.worker,
                "worker_cores": self.worker_cores,
                "interval": "final" if self.interval_index is None else self.interval_index,
                "seconds": format(seconds.normalize(), "f"),
                "worker_hours": format((seconds / 3600).quantize(Decimal("0.000001")).normalize(), "f"),
                "dcu_per_core_hour": self.dcu_per_core_hour,
            },
        }


class UsageOutbox(DebitOutbox):
    """The durable queue of worker debits (created on first use); reading and delivery marks are the hub's
    (`desp_hub.metering.DebitOutbox`)."""

    table = usage_table
    row_class = UsageRow

    def __init__(self, url: str):
        self.url = url
        self.engine = sa.create_engine(url)
        metadata.create_all(self.engine)

    def record_worker(
        self,
        *,
        username: str,
        cluster: str,
        worker: str,
        worker_cores: int,
        dcu_per_core_hour: Any,
        interval_seconds: int,
        started: datetime.datetime,
        stopped: datetime.datetime | None = None,
        now: datetime.datetime | None = None,
    ) -> int:
        """Queue a worker's debits not queued yet: every complete interval since `started` up to `stopped` (or
        `now`, while it runs) and, once stopped, the final partial interval. Returns how many were queued now
        (intervals of 0 milli-DCU, e.g. a free price, are not debited)."""
        now = utc(now) if now else datetime.datetime.now(datetime.UTC)
        end = utc(stopped) if stopped is not None else now
        count = complete_intervals(started, interval_seconds, end)
        periods: list[tuple[int | None, datetime.datetime, datetime.datetime]] = [
            (index, *interval_bounds(started, interval_seconds, index)) for index in range(count)
        ]
        if stopped is not None:
            last_start = interval_bounds(started, interval_seconds, count)[0]
            if end > last_start:
                periods.append((None, last_start, end))
        price = price_text(dcu_per_core_hour)
        per_hour = Decimal(price) * int(worker_cores)
        prefix = usage_key(username, cluster, worker, 0)[:-1]
        queued = 0
        with self.engine.begin() as connection:
            of_worker = usage_table.c.idempotency_key.startswith(prefix, autoescape=True)
            known = set(connection.execute(sa.select(usage_table.c.idempotency_key).where(of_worker)).scalars())
            for index, start, stop in periods:
                key = usage_key(username, cluster, worker, index)
                amount = amount_milli(per_hour, seconds_between(start, stop))
                if key in known or amount <= 0:  # the accounting service refuses zero amounts
                    continue
                queued += self._insert_pending(
                    connection,
                    now,
                    {
                        "idempotency_key": key,
                        "username": username,
                        "cluster": cluster,
                        "worker": worker,
                        "worker_cores": int(worker_cores),
                        "dcu_per_core_hour": price,
                        "interval_index": index,
                        "period_start": start,
                        "period_end": stop,
                        "amount_milli": amount,
                    },
                )
        return queued

    def rows(self, status: str | None = None, limit: int | None = None, username: str | None = None) -> list[UsageRow]:
        return self._select_rows(status, limit, username=username)
