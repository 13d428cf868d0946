"""The Dask workers a gateway without its own worker records has seen, kept next to the worker debits.

On Kubernetes the gateway's API pod does not start workers (the controller does) and keeps no database of them:
it only hears of them (scheduler heartbeats, the worker pods it may list). Metering needs each worker's start and,
once, its stop, across restarts of that pod, so a worker's first sighting (its start) and its stop are written here,
in the outbox's database (table `dask_worker_sightings`, next to `dask_worker_debits`), before any debit is queued.
A sighting's price, cores and interval are those of its cluster when first seen, as the local backend records
them with the cluster. A closed sighting stays closed: its final interval is queued once.
"""

from __future__ import annotations

import dataclasses
import datetime

import sqlalchemy as sa

from desp_hub.metering import utc

metadata = sa.MetaData()

sightings_table = sa.Table(
    "dask_worker_sightings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(255), nullable=False),
    sa.Column("cluster", sa.String(255), nullable=False),
    sa.Column("worker", sa.String(255), nullable=False),
    sa.Column("worker_cores", sa.Integer, nullable=False),
    sa.Column("dcu_per_core_hour", sa.String(32), nullable=False),
    sa.Column("interval_seconds", sa.Integer, nullable=False),
    sa.Column("started", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
    sa.Column("stopped", sa.DateTime(timezone=True), nullable=True),
    sa.UniqueConstraint("cluster", "worker", name="uq_dask_sighting_worker"),
    sa.Index("ix_dask_sighting_open", "stopped", "cluster"),
)


def _utc(value: datetime.datetime | None) -> datetime.datetime | None:
    """`desp_hub.metering.utc`, None staying None (a sighting not stopped yet)."""
    return None if value is None else utc(value)


@dataclasses.dataclass(frozen=True)
class Sighting:
    """A worker as first seen: who runs it, at what price, since when; `stopped` once it is gone."""

    username: str
    cluster: str
    worker: str
    worker_cores: int
    dcu_per_core_hour: str
    interval_seconds: int
    started: datetime.datetime
    last_seen: datetime.datetime
    stopped: datetime.datetime | None

    @classmethod
    def from_row(cls, row) -> Sighting:
        values = {key: value for key, value in row._mapping.items() if key != "id"}
        for name in ("started", "last_seen", "stopped"):
            values[name] = _utc(values[name])
        return cls(**values)

    def debit_fields(self) -> dict:
        """The keyword arguments of `UsageOutbox.record_worker` / `queue_worker_debits` for this worker."""
        return {
            "username": self.username,
            "cluster": self.cluster,
            "worker": self.worker,
            "worker_cores": self.worker_cores,
            "dcu_per_core_hour": self.dcu_per_core_hour,
            "interval_seconds": self.interval_seconds,
            "started": self.started,
        }


class WorkerSightings:
    """The sightings table in `engine`'s database (the outbox's; created on first use)."""

    def __init__(self, engine: sa.engine.Engine):
        self.engine = engine
        metadata.create_all(engine)

    def sight(self, *, username: str, cluster: str, worker: str, worker_cores: int, dcu_per_core_hour: str,
              interval_seconds: int, started: datetime.datetime, seen: datetime.datetime) -> bool:  # fmt: skip
        """Record a worker seen running at `seen` (its start `started` the first time); True if it is new."""
        seen = _utc(seen)
        of_worker = (sightings_table.c.cluster == cluster, sightings_table.c.worker == worker)
        with self.engine.begin() as connection:
            row = connection.execute(sa.select(sightings_table.c.stopped).where(*of_worker)).first()
            if row is not None:
                if row.stopped is None:
                    connection.execute(sa.update(sightings_table).where(*of_worker).values(last_seen=seen))
                return False
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    sa.insert(sightings_table).values(
                        username=username, cluster=cluster, worker=worker, worker_cores=int(worker_cores),
                        dcu_per_core_hour=str(dcu_per_core_hour), interval_seconds=int(interval_seconds),
                        started=_utc(started), last_seen=seen, stopped=None,
                    )
                )  # fmt: skip
        except sa.exc.IntegrityError:  # seen at the same time by another pass or replica
            return False
        return True

    def open(self, cluster: str | None = None) -> list[Sighting]:
        """The workers not known to have stopped (of `cluster`, or of every cluster)."""
        query = sa.select(sightings_table).where(sightings_table.c.stopped.is_(None)).order_by(sightings_table.c.id)
        if cluster is not None:
            query = query.where(sightings_table.c.cluster == cluster)
        with self.engine.connect() as connection:
            return [Sighting.from_row(row) for row in connection.execute(query)]

    def all(self) -> list[Sighting]:
        with self.engine.connect() as connection:
            query = sa.select(sightings_table).order_by(sightings_table.c.id)
            return [Sighting.from_row(row) for row in connection.execute(query)]

    def close(self, sighting: Sighting, stopped: datetime.datetime) -> Sighting | None:
        """Mark the worker stopped at `stopped` (not before its start); the closed sighting, or None when it was
        closed already (by another pass or replica: only one closes it, so its final interval is queued once)."""
        stopped = max(_utc(stopped), sighting.started)
        with self.engine.begin() as connection:
            changed = connection.execute(
                sa.update(sightings_table)
                .where(sightings_table.c.cluster == sighting.cluster, sightings_table.c.worker == sighting.worker,
                       sightings_table.c.stopped.is_(None))
                .values(stopped=stopped)
            ).rowcount  # fmt: skip
        return dataclasses.replace(sighting, stopped=stopped) if changed else None
