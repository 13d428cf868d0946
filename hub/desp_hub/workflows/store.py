"""The workflows store: published workflows, their immutable versions, schedules, schedule ticks and runs.

SQLite by default (`sqlite:///<hub cwd>/workflows.sqlite`), PostgreSQL by URL. The schema is managed by the
Alembic migrations in `desp_hub/workflows/migrations` with their own version table (`workflows_alembic_version`),
so the store may share a database with the hub and the profile store. Rows are returned as plain dicts
(datetimes aware, UTC); the service turns them into API answers.

Guarantees the rest relies on:

- a version is never changed once written; a workflow's versions are numbered 1, 2, ... (unique per workflow);
- a run changes state only through conditional updates (`... WHERE status = 'queued'`), so a run is claimed by
  one runner once;
- a schedule tick is a row unique on (schedule, tick time): recording it again does nothing (see `scheduler`).

The methods block on database I/O: from a coroutine, call them in a worker thread.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from desp_hub import alembic_support

# the profile store's engine set-up (SQLite WAL, BEGIN IMMEDIATE for writers, busy timeout) suits this store too
from desp_hub.profile_store import _make_engine

__all__ = [
    "ALEMBIC_VERSION_TABLE",
    "NameTaken",
    "NotFound",
    "WorkflowStore",
    "alembic_config",
    "metadata",
    "utcnow",
]

ALEMBIC_VERSION_TABLE = "workflows_alembic_version"
MIGRATIONS = Path(__file__).with_name("migrations")
_PG_MIGRATION_LOCK = 0x57464C57  # "WFLW": serialises migrations of concurrent starts on PostgreSQL

QUEUED, RUNNING, SUCCEEDED, FAILED, TIMED_OUT = "queued", "running", "succeeded", "failed", "timed_out"
FINISHED = (SUCCEEDED, FAILED, TIMED_OUT)

# The head schema, for the queries below. The migrations define the schema; a test checks that they agree.
metadata = sa.MetaData()

workflows_table = sa.Table(
    "workflows",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("visibility", sa.String(16), nullable=False),
    sa.Column("group_name", sa.String(255), nullable=True),
    sa.Column("allow_run_by_others", sa.Boolean, nullable=False),
    sa.Column("profile", sa.String(63), nullable=False),
    sa.Column("timeout_seconds", sa.Integer, nullable=False),
    sa.Column("retries", sa.Integer, nullable=False),
    sa.Column("outputs", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("uq_workflows_owner_name_live", "owner", "name", unique=True,
             sqlite_where=sa.text("deleted_at IS NULL"), postgresql_where=sa.text("deleted_at IS NULL")),
)

versions_table = sa.Table(
    "workflow_versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("workflow_id", sa.Integer, sa.ForeignKey("workflows.id"), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("notebook", sa.JSON, nullable=False),
    sa.Column("parameters", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(255), nullable=False),
    sa.UniqueConstraint("workflow_id", "number", name="uq_workflow_versions_number"),
)

schedules_table = sa.Table(
    "workflow_schedules",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("workflow_id", sa.Integer, sa.ForeignKey("workflows.id"), nullable=False),
    sa.Column("cron", sa.String(255), nullable=True),
    sa.Column("timezone", sa.String(64), nullable=True),
    sa.Column("interval_seconds", sa.Integer, nullable=True),
    sa.Column("missed_policy", sa.String(16), nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("parameters", sa.JSON, nullable=False),
    sa.Column("username", sa.String(255), nullable=False),
    sa.Column("next_tick", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("workflow_id", name="uq_workflow_schedules_workflow"),
)

runs_table = sa.Table(
    "workflow_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("workflow_id", sa.Integer, sa.ForeignKey("workflows.id"), nullable=False),
    sa.Column("version_id", sa.Integer, sa.ForeignKey("workflow_versions.id"), nullable=False),
    sa.Column("username", sa.String(255), nullable=False),
    sa.Column("parameters", sa.JSON, nullable=False),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("tick_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("profile", sa.String(63), nullable=False),
    sa.Column("timeout_seconds", sa.Integer, nullable=False),
    sa.Column("retries", sa.Integer, nullable=False),
    sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("run_seconds", sa.Float, nullable=False),
    sa.Column("error", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("log_path", sa.Text, nullable=True),
    sa.Column("outputs", sa.JSON, nullable=False),
    sa.Column("trace_error", sa.Text, nullable=True),
    sa.Column("dcu_per_hour", sa.String(32), nullable=True),
    sa.Column("dcu_amount", sa.String(32), nullable=True),
    sa.Column("dcu_status", sa.String(16), nullable=True),
    sa.Column("dcu_transaction_id", sa.String(64), nullable=True),
    sa.Column("dcu_error", sa.Text, nullable=True),
    sa.Index("ix_workflow_runs_status", "status", "id"),
    sa.Index("ix_workflow_runs_workflow", "workflow_id", "id"),
    sa.Index("ix_workflow_runs_dcu", "dcu_status"),
)

ticks_table = sa.Table(
    "workflow_ticks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("schedule_id", sa.Integer, sa.ForeignKey("workflow_schedules.id", ondelete="CASCADE"), nullable=False),
    sa.Column("tick_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("workflow_runs.id"), nullable=True),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("schedule_id", "tick_at", name="uq_workflow_ticks_schedule_tick"),
)

# Workflow fields a PATCH may change (the rest is set by the store).
EDITABLE_FIELDS = ("name", "description", "visibility", "group_name", "allow_run_by_others", "profile",
                   "timeout_seconds", "retries", "outputs")  # fmt: skip


class NotFound(LookupError):
    """No such workflow, version, run or schedule (or a deleted workflow)."""


class NameTaken(ValueError):
    """The owner already has a workflow of that name; `workflow_id` is its id."""

    def __init__(self, name: str, workflow_id: int):
        super().__init__(f"you already have a workflow named {name!r} (id {workflow_id}): publish a new version of it")
        self.workflow_id = workflow_id


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def utc(value: datetime.datetime | None) -> datetime.datetime | None:
    """Aware UTC; SQLite returns naive datetimes, which the store always wrote in UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=datetime.UTC) if value.tzinfo is None else value.astimezone(datetime.UTC)


def _row(row) -> dict[str, Any]:
    return {key: utc(value) if isinstance(value, datetime.datetime) else value for key, value in row._mapping.items()}


def alembic_config(url_or_connection: str | Connection):
    """An Alembic `Config` for the store's migrations (no alembic.ini on disk), bound to a URL or a connection."""
    return alembic_support.alembic_config(MIGRATIONS, ALEMBIC_VERSION_TABLE, url_or_connection)


class WorkflowStore:
    """Workflows, versions, schedules, ticks and runs in a SQL database (SQLAlchemy URL)."""

    def __init__(self, url: str):
        self.engine = _make_engine(url)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.engine.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        self.engine.dispose()

    # -- schema ----------------------------------------------------------------------------------------------------

    def upgrade(self, revision: str = "head") -> None:
        """Bring the schema to `revision` (default: the newest); idempotent, safe for concurrent starts."""
        from alembic import command

        with self.writing() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            command.upgrade(alembic_config(connection), revision)

    def schema_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"version_table": ALEMBIC_VERSION_TABLE})
            return context.get_current_revision()

    @contextlib.contextmanager
    def writing(self) -> Iterator[Connection]:
        """A write transaction (SQLite: BEGIN IMMEDIATE, so read-then-write sequences are serialised)."""
        with self.engine.connect() as connection:
            connection.execution_options(desp_write=True)
            with connection.begin():
                yield connection

    @contextlib.contextmanager
    def reading(self) -> Iterator[Connection]:
        with self.engine.connect() as connection:
            yield connection

    # -- workflows -------------------------------------------------------------------------------------------------

    def create_workflow(self, owner: str, fields: Mapping[str, Any], notebook: Mapping[str, Any], sha256: str,
                        parameters: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
        """A new workflow with version 1 of `notebook`. Raises NameTaken."""
        now = utcnow()
        with self.writing() as connection:
            self._check_name(connection, owner, fields["name"], None)
            workflow_id = connection.execute(
                sa.insert(workflows_table).values(
                    owner=owner, created_at=now, updated_at=now, deleted_at=None,
                    **{name: fields[name] for name in EDITABLE_FIELDS},
                )
            ).inserted_primary_key[0]
            self._insert_version(connection, workflow_id, 1, notebook, sha256, parameters, owner, now)
            return self._workflow(connection, workflow_id)

    def _check_name(self, connection: Connection, owner: str, name: str, workflow_id: int | None) -> None:
        existing = connection.execute(
            sa.select(workflows_table.c.id).where(
                workflows_table.c.owner == owner, workflows_table.c.name == name, workflows_table.c.deleted_at.is_(None)
            )
        ).scalar()
        if existing is not None and existing != workflow_id:
            raise NameTaken(name, existing)

    def get_workflow(self, workflow_id: int) -> dict[str, Any]:
        """A live workflow; NotFound if there is none (or it was deleted)."""
        with self.reading() as connection:
            return self._workflow(connection, workflow_id)

    @staticmethod
    def _workflow(connection: Connection, workflow_id: int) -> dict[str, Any]:
        row = connection.execute(
            sa.select(workflows_table).where(
                workflows_table.c.id == workflow_id, workflows_table.c.deleted_at.is_(None)
            )
        ).first()
        if row is None:
            raise NotFound(f"there is no workflow {workflow_id}")
        return _row(row)

    def list_workflows(self, user: str, groups: Iterable[str]) -> list[dict[str, Any]]:
        """The live workflows `user` (member of `groups`) may see: their own, their groups', the public ones."""
        table = workflows_table
        visible = sa.or_(
            table.c.owner == user,
            table.c.visibility == "public",
            sa.and_(table.c.visibility == "group", table.c.group_name.in_(list(groups) or [""])),
        )
        query = sa.select(table).where(table.c.deleted_at.is_(None), visible).order_by(table.c.id)
        with self.reading() as connection:
            return [_row(row) for row in connection.execute(query)]

    def find_workflow(self, owner: str, name: str) -> dict[str, Any]:
        """The owner's live workflow named `name`; NotFound otherwise."""
        with self.reading() as connection:
            row = connection.execute(
                sa.select(workflows_table).where(
                    workflows_table.c.owner == owner, workflows_table.c.name == name,
                    workflows_table.c.deleted_at.is_(None),
                )
            ).first()
        if row is None:
            raise NotFound(f"there is no workflow named {name!r}")
        return _row(row)

    def update_workflow(self, workflow_id: int, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change editable fields of a live workflow. Raises NotFound, NameTaken."""
        unknown = set(changes) - set(EDITABLE_FIELDS)
        if unknown:
            raise ValueError(f"not editable: {sorted(unknown)}")
        with self.writing() as connection:
            current = self._workflow(connection, workflow_id)
            if "name" in changes:
                self._check_name(connection, current["owner"], changes["name"], workflow_id)
            if changes:
                connection.execute(
                    sa.update(workflows_table).where(workflows_table.c.id == workflow_id)
                    .values(updated_at=utcnow(), **changes)
                )
            return self._workflow(connection, workflow_id)

    def delete_workflow(self, workflow_id: int) -> list[int]:
        """Delete a workflow (kept as a record for its runs): its schedule goes, its queued runs fail.

        Returns the ids of its runs that were running (the runner stops them).
        """
        now = utcnow()
        with self.writing() as connection:
            self._workflow(connection, workflow_id)
            connection.execute(
                sa.update(workflows_table).where(workflows_table.c.id == workflow_id).values(deleted_at=now)
            )
            self._delete_schedule(connection, workflow_id)
            connection.execute(
                sa.update(runs_table)
                .where(runs_table.c.workflow_id == workflow_id, runs_table.c.status == QUEUED)
                .values(status=FAILED, finished_at=now,
                        error={"cell_index": None, "ename": "Cancelled", "evalue": "the workflow was deleted"})
            )
            return list(connection.execute(
                sa.select(runs_table.c.id).where(runs_table.c.workflow_id == workflow_id,
                                                 runs_table.c.status == RUNNING)
            ).scalars())  # fmt: skip

    # -- versions --------------------------------------------------------------------------------------------------

    @staticmethod
    def _insert_version(connection, workflow_id, number, notebook, sha256, parameters, actor, now) -> None:
        connection.execute(
            sa.insert(versions_table).values(
                workflow_id=workflow_id, number=number, sha256=sha256, notebook=dict(notebook),
                parameters=list(parameters), created_at=now, created_by=actor,
            )
        )

    def add_version(self, workflow_id: int, notebook: Mapping[str, Any], sha256: str,
                    parameters: list[dict[str, Any]], actor: str) -> tuple[dict[str, Any], bool]:  # fmt: skip
        """A new version, or the latest one when its content hash is the same: (version, created)."""
        now = utcnow()
        with self.writing() as connection:
            self._workflow(connection, workflow_id)
            latest = self._latest_version(connection, workflow_id)
            if latest["sha256"] == sha256:
                return latest, False
            number = latest["number"] + 1
            self._insert_version(connection, workflow_id, number, notebook, sha256, parameters, actor, now)
            connection.execute(
                sa.update(workflows_table).where(workflows_table.c.id == workflow_id).values(updated_at=now)
            )
            return self._latest_version(connection, workflow_id), True

    @staticmethod
    def _latest_version(connection: Connection, workflow_id: int) -> dict[str, Any]:
        row = connection.execute(
            sa.select(versions_table).where(versions_table.c.workflow_id == workflow_id)
            .order_by(versions_table.c.number.desc()).limit(1)
        ).first()
        if row is None:
            raise NotFound(f"workflow {workflow_id} has no version")
        return _row(row)

    def latest_version(self, workflow_id: int) -> dict[str, Any]:
        with self.reading() as connection:
            return self._latest_version(connection, workflow_id)

    def latest_versions(self, workflow_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """The latest version (without its notebook) of each workflow, by workflow id."""
        ids = list(workflow_ids)
        if not ids:
            return {}
        newest = (
            sa.select(versions_table.c.workflow_id, sa.func.max(versions_table.c.number).label("number"))
            .where(versions_table.c.workflow_id.in_(ids)).group_by(versions_table.c.workflow_id).subquery()
        )
        columns = [c for c in versions_table.c if c.name != "notebook"]
        query = sa.select(*columns).join(
            newest, sa.and_(versions_table.c.workflow_id == newest.c.workflow_id,
                            versions_table.c.number == newest.c.number)
        )  # fmt: skip
        with self.reading() as connection:
            return {row.workflow_id: _row(row) for row in connection.execute(query)}

    def get_version(self, workflow_id: int, number: int) -> dict[str, Any]:
        with self.reading() as connection:
            row = connection.execute(
                sa.select(versions_table).where(versions_table.c.workflow_id == workflow_id,
                                                versions_table.c.number == number)
            ).first()  # fmt: skip
        if row is None:
            raise NotFound(f"workflow {workflow_id} has no version {number}")
        return _row(row)

    def version_by_id(self, version_id: int) -> dict[str, Any]:
        with self.reading() as connection:
            row = connection.execute(sa.select(versions_table).where(versions_table.c.id == version_id)).first()
        if row is None:
            raise NotFound(f"there is no version {version_id}")
        return _row(row)

    def list_versions(self, workflow_id: int) -> list[dict[str, Any]]:
        """The workflow's versions, newest first, without their notebooks."""
        columns = [c for c in versions_table.c if c.name != "notebook"]
        with self.reading() as connection:
            return [_row(row) for row in connection.execute(
                sa.select(*columns).where(versions_table.c.workflow_id == workflow_id)
                .order_by(versions_table.c.number.desc())
            )]  # fmt: skip

    # -- schedules -------------------------------------------------------------------------------------------------

    def set_schedule(self, workflow_id: int, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Create or replace the workflow's schedule (`fields`: cron, timezone, interval_seconds, missed_policy,
        enabled, parameters, username, next_tick). The tick history of a replaced schedule stays."""
        now = utcnow()
        with self.writing() as connection:
            self._workflow(connection, workflow_id)
            existing = connection.execute(
                sa.select(schedules_table.c.id).where(schedules_table.c.workflow_id == workflow_id)
            ).scalar()
            values = {name: fields.get(name) for name in ("cron", "timezone", "interval_seconds")}
            values.update(missed_policy=fields["missed_policy"], enabled=fields["enabled"],
                          parameters=dict(fields.get("parameters") or {}), username=fields["username"],
                          next_tick=fields["next_tick"], updated_at=now)  # fmt: skip
            if existing is None:
                connection.execute(sa.insert(schedules_table).values(workflow_id=workflow_id, created_at=now, **values))
            else:
                connection.execute(sa.update(schedules_table).where(schedules_table.c.id == existing).values(**values))
            return self._schedule(connection, workflow_id)

    def get_schedule(self, workflow_id: int) -> dict[str, Any] | None:
        with self.reading() as connection:
            try:
                return self._schedule(connection, workflow_id)
            except NotFound:
                return None

    def schedules_of(self, workflow_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        ids = list(workflow_ids)
        if not ids:
            return {}
        with self.reading() as connection:
            rows = connection.execute(sa.select(schedules_table).where(schedules_table.c.workflow_id.in_(ids)))
            return {row.workflow_id: _row(row) for row in rows}

    @staticmethod
    def _schedule(connection: Connection, workflow_id: int) -> dict[str, Any]:
        row = connection.execute(sa.select(schedules_table).where(schedules_table.c.workflow_id == workflow_id)).first()
        if row is None:
            raise NotFound(f"workflow {workflow_id} has no schedule")
        return _row(row)

    def delete_schedule(self, workflow_id: int) -> None:
        with self.writing() as connection:
            self._workflow(connection, workflow_id)
            if not self._delete_schedule(connection, workflow_id):
                raise NotFound(f"workflow {workflow_id} has no schedule")

    @staticmethod
    def _delete_schedule(connection: Connection, workflow_id: int) -> bool:
        schedule_id = connection.execute(
            sa.select(schedules_table.c.id).where(schedules_table.c.workflow_id == workflow_id)
        ).scalar()
        if schedule_id is None:
            return False
        connection.execute(sa.delete(ticks_table).where(ticks_table.c.schedule_id == schedule_id))
        connection.execute(sa.delete(schedules_table).where(schedules_table.c.id == schedule_id))
        return True

    def ticks(self, workflow_id: int) -> list[dict[str, Any]]:
        """The recorded ticks of the workflow's schedule, oldest first."""
        query = (
            sa.select(ticks_table).join(schedules_table, schedules_table.c.id == ticks_table.c.schedule_id)
            .where(schedules_table.c.workflow_id == workflow_id).order_by(ticks_table.c.tick_at)
        )
        with self.reading() as connection:
            return [_row(row) for row in connection.execute(query)]

    # -- runs ------------------------------------------------------------------------------------------------------

    @staticmethod
    def insert_run(connection: Connection, workflow: Mapping[str, Any], version: Mapping[str, Any], user: str,
                   parameters: Mapping[str, Any], trigger: str, now: datetime.datetime,
                   tick_at: datetime.datetime | None = None) -> int:  # fmt: skip
        """Queue a run (inside the caller's transaction); its id."""
        return connection.execute(
            sa.insert(runs_table).values(
                workflow_id=workflow["id"], version_id=version["id"], username=user, parameters=dict(parameters),
                trigger=trigger, tick_at=tick_at, status=QUEUED, attempt=0, profile=workflow["profile"],
                timeout_seconds=workflow["timeout_seconds"], retries=workflow["retries"], queued_at=now,
                run_seconds=0.0, error=None, outputs=[],
            )
        ).inserted_primary_key[0]

    def create_run(self, workflow_id: int, version_number: int | None, user: str, parameters: Mapping[str, Any],
                   trigger: str = "manual") -> dict[str, Any]:  # fmt: skip
        """Queue a run of a version (default: the latest) of a live workflow."""
        with self.writing() as connection:
            workflow = self._workflow(connection, workflow_id)
            if version_number is None:
                version = self._latest_version(connection, workflow_id)
            else:
                row = connection.execute(
                    sa.select(versions_table).where(versions_table.c.workflow_id == workflow_id,
                                                    versions_table.c.number == version_number)
                ).first()  # fmt: skip
                if row is None:
                    raise NotFound(f"workflow {workflow_id} has no version {version_number}")
                version = _row(row)
            run_id = self.insert_run(connection, workflow, version, user, parameters, trigger, utcnow())
            return self._run(connection, run_id)

    def get_run(self, run_id: int) -> dict[str, Any]:
        """A run with its version's number (`version`); NotFound."""
        with self.reading() as connection:
            return self._run(connection, run_id)

    @staticmethod
    def _run_query():
        return sa.select(runs_table, versions_table.c.number.label("version")).join(
            versions_table, versions_table.c.id == runs_table.c.version_id
        )

    def _run(self, connection: Connection, run_id: int) -> dict[str, Any]:
        row = connection.execute(self._run_query().where(runs_table.c.id == run_id)).first()
        if row is None:
            raise NotFound(f"there is no run {run_id}")
        return _row(row)

    def list_runs(self, workflow_id: int | None = None, *, status: Iterable[str] | None = None,
                  limit: int = 100) -> list[dict[str, Any]]:  # fmt: skip
        """Runs, newest first (of one workflow, in some states)."""
        query = self._run_query().order_by(runs_table.c.id.desc()).limit(limit)
        if workflow_id is not None:
            query = query.where(runs_table.c.workflow_id == workflow_id)
        if status is not None:
            query = query.where(runs_table.c.status.in_(list(status)))
        with self.reading() as connection:
            return [_row(row) for row in connection.execute(query)]

    def claim_runs(self, max_total: int, max_per_user: int) -> list[dict[str, Any]]:
        """Move the oldest queued runs that fit the limits to `running` (attempt + 1); the claimed runs.

        Limits count the runs already running: at most `max_total` in all and `max_per_user` per user.
        """
        claimed = []
        now = utcnow()
        with self.reading() as connection:  # the common case, nothing queued, takes no write lock
            queued = sa.select(runs_table.c.id).where(runs_table.c.status == QUEUED).limit(1)
            if connection.execute(queued).first() is None:
                return []
        with self.writing() as connection:
            running = list(connection.execute(
                sa.select(runs_table.c.username).where(runs_table.c.status == RUNNING)
            ).scalars())  # fmt: skip
            per_user: dict[str, int] = {}
            for user in running:
                per_user[user] = per_user.get(user, 0) + 1
            free = max_total - len(running)
            if free <= 0:
                return []
            queued = connection.execute(
                sa.select(runs_table.c.id, runs_table.c.username).where(runs_table.c.status == QUEUED)
                .order_by(runs_table.c.id)
            ).all()  # fmt: skip
            for run_id, user in queued:
                if free <= 0:
                    break
                if per_user.get(user, 0) >= max_per_user:
                    continue
                updated = connection.execute(
                    sa.update(runs_table).where(runs_table.c.id == run_id, runs_table.c.status == QUEUED)
                    .values(status=RUNNING, attempt=runs_table.c.attempt + 1, started_at=now, finished_at=None)
                )  # fmt: skip
                if updated.rowcount == 1:
                    per_user[user] = per_user.get(user, 0) + 1
                    free -= 1
                    claimed.append(self._run(connection, run_id))
        return claimed

    def update_run(self, run_id: int, *, expected_status: str | None = None, **values: Any) -> bool:
        """Set columns of a run (only while it is in `expected_status`, when given); whether it changed."""
        with self.writing() as connection:
            query = sa.update(runs_table).where(runs_table.c.id == run_id)
            if expected_status is not None:
                query = query.where(runs_table.c.status == expected_status)
            return connection.execute(query.values(**values)).rowcount == 1

    def requeue_interrupted(self) -> list[int]:
        """Runs left `running` by a service that stopped go back to the queue (their attempt is not counted)."""
        with self.writing() as connection:
            ids = list(connection.execute(
                sa.select(runs_table.c.id).where(runs_table.c.status == RUNNING)
            ).scalars())  # fmt: skip
            if ids:
                connection.execute(
                    sa.update(runs_table).where(runs_table.c.id.in_(ids))
                    .values(status=QUEUED, attempt=runs_table.c.attempt - 1, started_at=None)
                )
            return ids

    def runs_to_debit(self, limit: int = 50) -> list[dict[str, Any]]:
        """Finished runs whose DCU transaction is still to be delivered."""
        with self.reading() as connection:
            return [_row(row) for row in connection.execute(
                self._run_query().where(runs_table.c.dcu_status == "pending").order_by(runs_table.c.id).limit(limit)
            )]  # fmt: skip


@functools.cache
def migrated_store(url: str) -> WorkflowStore:
    """One store per URL and process, migrated on first use."""
    store = WorkflowStore(url)
    store.upgrade()
    return store
