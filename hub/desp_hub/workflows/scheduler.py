"""Schedules of workflows: when they tick, and recording each tick exactly once, even across restarts.

A schedule is a cron expression read in a time zone (`croniter` on `zoneinfo` time; `0 6 * * *` in
`Europe/Rome` is 06:00 in Rome, summer and winter) or a fixed interval in seconds. Its row keeps `next_tick`, the
first tick not yet recorded.

Each pass of `record_due_ticks(store, now)` handles, per enabled schedule, every tick from `next_tick` up to
`now`, in one transaction per schedule:

1. the tick is INSERTed into `workflow_ticks`, which is UNIQUE on (schedule, tick time), with "on conflict do
   nothing": a tick recorded before (by this process before a crash, or by another process) is not recorded, and
   so not run, twice;
2. a tick whose time is less than `grace_seconds` ago is on time: it queues a run of the latest version;
3. older ticks were missed (the service was down, or the machine asleep). Policy `run_once`: the newest missed
   tick queues one run and the others are recorded `missed`; policy `skip`: all are recorded `missed`;
4. `next_tick` moves past `now`.

So no tick is silently lost (every tick up to now has a row, `run` with its run id, or `missed`) and none is
duplicated. `max_ticks_per_pass` bounds the work after a very long outage of a very frequent schedule: the ticks
beyond it are summed up in one log line and `next_tick` jumps past now.

Blocking (database): from a coroutine, call `record_due_ticks` in a worker thread.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import zoneinfo
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from croniter import croniter
from sqlalchemy.dialects import postgresql, sqlite

from .store import WorkflowStore, _row, schedules_table, ticks_table, utcnow, versions_table, workflows_table

__all__ = [
    "MISSED_POLICIES",
    "ScheduleError",
    "ScheduleTiming",
    "TickOutcome",
    "record_due_ticks",
    "utcnow",
]

log = logging.getLogger(__name__)

MISSED_POLICIES = ("run_once", "skip")
INTERVAL_MAX = 366 * 24 * 3600
CRON_MAX = 255


class ScheduleError(ValueError):
    """A schedule request is invalid; `field` names what is wrong (`cron`, `timezone`, `interval_seconds`)."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


@dataclasses.dataclass(frozen=True)
class ScheduleTiming:
    """When a schedule ticks: `cron` in `timezone`, or every `interval_seconds`."""

    cron: str | None = None
    timezone: str | None = None
    interval_seconds: int | None = None

    @classmethod
    def from_request(cls, body: Mapping[str, Any]) -> ScheduleTiming:
        """From a `PUT schedule` body: `{cron, timezone?}` (timezone default UTC) or `{interval_seconds}`."""
        cron, interval = body.get("cron"), body.get("interval_seconds")
        if cron is None and interval is None:
            raise ScheduleError("give either cron (with timezone) or interval_seconds", field="cron")
        if cron is not None and interval is not None:
            raise ScheduleError("give either cron or interval_seconds, not both", field="interval_seconds")
        if interval is not None:
            if isinstance(interval, float) and interval.is_integer():
                interval = int(interval)
            if isinstance(interval, bool) or not isinstance(interval, int) or not 1 <= interval <= INTERVAL_MAX:
                raise ScheduleError(f"interval_seconds must be a whole number from 1 to {INTERVAL_MAX}",
                                    field="interval_seconds")  # fmt: skip
            if body.get("timezone") not in (None, ""):
                raise ScheduleError("timezone goes with cron, not with interval_seconds", field="timezone")
            return cls(interval_seconds=interval)
        if not isinstance(cron, str) or not cron.strip() or len(cron) > CRON_MAX or "\x00" in cron:
            raise ScheduleError("cron must be a cron expression such as '0 6 * * *'", field="cron")
        cron = " ".join(cron.split())
        # five fields (minute hour day month weekday); croniter's seconds and year extensions are not offered
        if len(cron.split()) != 5 or not croniter.is_valid(cron):
            raise ScheduleError(f"{cron!r} is not a valid cron expression (minute hour day month weekday)",
                                field="cron")  # fmt: skip
        timezone = body.get("timezone") or "UTC"
        if not isinstance(timezone, str):
            raise ScheduleError("timezone must be an IANA time zone name such as 'Europe/Rome'", field="timezone")
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ScheduleError(f"{timezone!r} is not a known time zone (e.g. 'Europe/Rome', 'UTC')",
                                field="timezone") from None  # fmt: skip
        timing = cls(cron=cron, timezone=timezone)
        try:
            timing.first_tick_after(utcnow())
        except (ValueError, KeyError, OverflowError, StopIteration) as error:
            # e.g. "0 0 31 2 *" never fires
            raise ScheduleError(f"{cron!r} never fires: {error}", field="cron") from None
        return timing

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ScheduleTiming:
        return cls(cron=row["cron"], timezone=row["timezone"], interval_seconds=row["interval_seconds"])

    def to_fields(self) -> dict[str, Any]:
        return {"cron": self.cron, "timezone": self.timezone, "interval_seconds": self.interval_seconds}

    def first_tick_after(self, now: datetime.datetime) -> datetime.datetime:
        """The first tick strictly after `now` (UTC, whole seconds). An interval schedule counts from now."""
        now = now.astimezone(datetime.UTC)
        if self.interval_seconds:
            return now.replace(microsecond=0) + datetime.timedelta(seconds=self.interval_seconds)
        return self.next_after(now)

    def next_after(self, tick: datetime.datetime) -> datetime.datetime:
        """The tick following `tick` (UTC)."""
        tick = tick.astimezone(datetime.UTC)
        if self.interval_seconds:
            return tick + datetime.timedelta(seconds=self.interval_seconds)
        zone = zoneinfo.ZoneInfo(self.timezone or "UTC")
        following = croniter(self.cron, tick.astimezone(zone)).get_next(datetime.datetime)
        return following.astimezone(datetime.UTC).replace(microsecond=0)


@dataclasses.dataclass
class TickOutcome:
    """What one pass did: runs queued (by id), ticks recorded missed, ticks beyond the per-pass bound."""

    run_ids: list[int] = dataclasses.field(default_factory=list)
    missed: int = 0
    dropped: int = 0


def _insert_tick(connection, values: dict[str, Any]) -> bool:
    """INSERT ... ON CONFLICT (schedule_id, tick_at) DO NOTHING RETURNING id, in the database's dialect: whether
    the tick was new. (RETURNING, not the row count, which psycopg reports as -1 for this statement.)"""
    dialect = {"sqlite": sqlite, "postgresql": postgresql}.get(connection.dialect.name)
    if dialect is None:
        raise RuntimeError(f"the workflows scheduler supports SQLite and PostgreSQL, not {connection.dialect.name}")
    statement = dialect.insert(ticks_table).values(**values)
    statement = statement.on_conflict_do_nothing(index_elements=["schedule_id", "tick_at"]).returning(ticks_table.c.id)
    return connection.execute(statement).first() is not None


def record_due_ticks(store: WorkflowStore, now: datetime.datetime | None = None, *, grace_seconds: float = 60,
                     max_ticks_per_pass: int = 10_000) -> TickOutcome:  # fmt: skip
    """Record every due tick of every enabled schedule, queueing runs as the module docstring says."""
    now = (now or utcnow()).astimezone(datetime.UTC)
    outcome = TickOutcome()
    with store.reading() as connection:
        due = [
            row.id for row in connection.execute(
                sa.select(schedules_table.c.id, schedules_table.c.next_tick).where(schedules_table.c.enabled)
            ) if _utc(row.next_tick) <= now
        ]  # fmt: skip
    for schedule_id in due:
        try:
            _record_schedule(store, schedule_id, now, grace_seconds, max_ticks_per_pass, outcome)
        except Exception:
            log.exception("Could not record the ticks of schedule %s; trying again at the next pass", schedule_id)
    return outcome


def _utc(value: datetime.datetime) -> datetime.datetime:
    return value.replace(tzinfo=datetime.UTC) if value.tzinfo is None else value.astimezone(datetime.UTC)


def _record_schedule(store: WorkflowStore, schedule_id: int, now: datetime.datetime, grace_seconds: float,
                     max_ticks: int, outcome: TickOutcome) -> None:  # fmt: skip
    with store.writing() as connection:
        row = connection.execute(sa.select(schedules_table).where(schedules_table.c.id == schedule_id)).first()
        if row is None or not row.enabled:
            return
        schedule = _row(row)
        workflow_row = connection.execute(
            sa.select(workflows_table).where(workflows_table.c.id == schedule["workflow_id"],
                                             workflows_table.c.deleted_at.is_(None))
        ).first()  # fmt: skip
        if workflow_row is None:
            return
        workflow = _row(workflow_row)
        timing = ScheduleTiming.from_row(schedule)
        ticks, tick = [], schedule["next_tick"]
        while tick <= now and len(ticks) < max_ticks:
            ticks.append(tick)
            tick = timing.next_after(tick)
        if tick <= now:
            dropped = _count_beyond(timing, tick, now)
            outcome.dropped += dropped
            log.warning("Schedule %s of workflow %s: %d more ticks up to %s were due after a long outage; only the "
                        "first %d are recorded", schedule_id, workflow["id"], dropped, now.isoformat(), max_ticks)
            tick = _next_interval(timing, tick, now) if timing.interval_seconds else timing.next_after(now)
        late = [t for t in ticks if (now - t).total_seconds() > grace_seconds]
        to_run = {t for t in ticks if t not in late}
        if late and schedule["missed_policy"] == "run_once":
            to_run.add(late[-1])
        version = None
        for tick_at in ticks:
            runs = tick_at in to_run
            new = _insert_tick(connection, {
                "schedule_id": schedule_id, "tick_at": tick_at, "status": "run" if runs else "missed",
                "run_id": None, "recorded_at": now,
            })  # fmt: skip
            if not new:
                continue  # recorded before: never twice
            if not runs:
                outcome.missed += 1
                log.info("Schedule %s of workflow %s: tick %s missed (policy %s)", schedule_id, workflow["id"],
                         tick_at.isoformat(), schedule["missed_policy"])
                continue
            if version is None:
                version = _row(connection.execute(
                    sa.select(versions_table).where(versions_table.c.workflow_id == workflow["id"])
                    .order_by(versions_table.c.number.desc()).limit(1)
                ).first())  # fmt: skip
            run_id = WorkflowStore.insert_run(connection, workflow, version, schedule["username"],
                                              schedule["parameters"], "schedule", now, tick_at=tick_at)  # fmt: skip
            connection.execute(
                sa.update(ticks_table).where(ticks_table.c.schedule_id == schedule_id,
                                             ticks_table.c.tick_at == tick_at).values(run_id=run_id)
            )  # fmt: skip
            outcome.run_ids.append(run_id)
        connection.execute(
            sa.update(schedules_table).where(schedules_table.c.id == schedule_id).values(next_tick=tick)
        )


def _count_beyond(timing: ScheduleTiming, tick: datetime.datetime, now: datetime.datetime) -> int:
    if timing.interval_seconds:
        return math.floor((now - tick).total_seconds() / timing.interval_seconds) + 1
    count = 0
    while tick <= now and count < 10_000_000:
        count += 1
        tick = timing.next_after(tick)
    return count


def _next_interval(timing: ScheduleTiming, tick: datetime.datetime, now: datetime.datetime) -> datetime.datetime:
    """The first tick of the interval grid (through `tick`) strictly after `now`."""
    steps = math.floor((now - tick).total_seconds() / timing.interval_seconds) + 1
    return tick + datetime.timedelta(seconds=steps * timing.interval_seconds)
