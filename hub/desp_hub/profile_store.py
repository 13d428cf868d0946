"""The profiles store: server profiles in a database, edited live by admins, with versions and an audit trail.

SQLite by default, PostgreSQL by URL (`postgresql+psycopg://...`). The schema is managed by the Alembic migrations
shipped in `desp_hub/migrations` (`ProfileStore.upgrade()` runs them; no alembic.ini is needed). Each profile is
stored as the plain dict of `Profile.to_dict()`, so the validation in `desp_hub.profiles` is the only one.

Every write is one transaction that (1) takes the store's write lock (PostgreSQL: a table lock that readers do not
wait for; SQLite: BEGIN IMMEDIATE), (2) validates the resulting whole set of profiles with `validate_profiles`, (3)
changes a row only with a conditional `UPDATE ... WHERE version = :expected` and (4) appends to `profile_audit`.
A stale `expected_version` raises `VersionConflict` and nothing is written.

The methods block on database I/O: from a coroutine, call them in an executor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml
from sqlalchemy.engine import Connection, Engine

from . import alembic_support
from .profiles import Profile, ProfileError, load_profiles, parse_profiles_yaml, validate_profiles

__all__ = [
    "ALEMBIC_VERSION_TABLE",
    "DEFAULT_URL",
    "AuditEntry",
    "ProfileNotFound",
    "ProfileStore",
    "StoredProfile",
    "VersionConflict",
    "alembic_config",
    "migrated_store",
    "parse_profiles_yaml",
]

DEFAULT_URL = "sqlite:///desp_profiles.sqlite"

# Not Alembic's default "alembic_version": JupyterHub keeps its own Alembic history in that table, and the store may
# share a database with the hub.
ALEMBIC_VERSION_TABLE = "desp_profiles_alembic_version"

MIGRATIONS = Path(__file__).with_name("migrations")

# Seconds a SQLite writer waits for another writer's lock before giving up ("database is locked").
SQLITE_BUSY_TIMEOUT = 30

# An arbitrary constant naming the lock that serialises migrations on PostgreSQL (pg_advisory_xact_lock).
_PG_MIGRATION_LOCK = 0x44455350  # "DESP"

ACTIONS = ("create", "update", "disable", "enable", "delete", "import")

# The head schema, for the queries below. The migrations define the schema; a test checks that they agree.
metadata = sa.MetaData()

profiles_table = sa.Table(
    "profiles",
    metadata,
    sa.Column("slug", sa.String(63), primary_key=True),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_by", sa.String(255), nullable=False),
)

audit_table = sa.Table(
    "profile_audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("slug", sa.String(63), nullable=False, index=True),
    # none_as_null: a missing side (before a create, after a delete) is SQL NULL, not the JSON value null.
    sa.Column("before", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("after", sa.JSON(none_as_null=True), nullable=True),
)


class ProfileNotFound(LookupError):
    """No profile has this slug."""

    def __init__(self, slug: str):
        self.slug = slug
        super().__init__(f"there is no profile {slug!r}")


class VersionConflict(Exception):
    """The profile changed since the caller read it; `current_version` is the version now stored."""

    def __init__(self, slug: str, expected_version: int, current_version: int, updated_by: str, updated_at):
        self.slug = slug
        self.expected_version = expected_version
        self.current_version = current_version
        self.updated_by = updated_by
        self.updated_at = updated_at
        super().__init__(
            f"profile {slug!r} was changed by {updated_by} at {_iso(updated_at)} and is now at version "
            f"{current_version} (you edited version {expected_version}); reload it and apply your change again"
        )


def _utc(value: datetime.datetime) -> datetime.datetime:
    # SQLite keeps no time zone: everything is written in UTC, so a naive value read back is UTC.
    if value.tzinfo is None:
        return value.replace(tzinfo=datetime.UTC)
    return value.astimezone(datetime.UTC)


def _iso(value: datetime.datetime) -> str:
    return _utc(value).isoformat().replace("+00:00", "Z")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclasses.dataclass(frozen=True)
class StoredProfile:
    """A profile as stored: the profile plus its version and who changed it last, when."""

    profile: Profile
    version: int
    updated_at: datetime.datetime
    updated_by: str

    @property
    def slug(self) -> str:
        return self.profile.slug

    def to_dict(self) -> dict[str, Any]:
        """`profile.to_dict()` plus `version`, `updated_at` (ISO 8601, UTC, Z) and `updated_by`."""
        return {
            **self.profile.to_dict(),
            "version": self.version,
            "updated_at": _iso(self.updated_at),
            "updated_by": self.updated_by,
        }


@dataclasses.dataclass(frozen=True)
class AuditEntry:
    """One change: who did what to which profile, when; `before`/`after` are profile dicts (None when absent)."""

    id: int
    at: datetime.datetime
    actor: str
    action: str
    slug: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": _iso(self.at),
            "actor": self.actor,
            "action": self.action,
            "slug": self.slug,
            "before": self.before,
            "after": self.after,
        }


def alembic_config(url_or_connection: str | Connection):
    """An Alembic `Config` for the store's migrations (no alembic.ini on disk), bound to a URL or a connection."""
    return alembic_support.alembic_config(MIGRATIONS, ALEMBIC_VERSION_TABLE, url_or_connection)


def _make_engine(url: str) -> Engine:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)

    in_memory = parsed.database in (None, "", ":memory:")
    engine = sa.create_engine(
        url,
        pool_pre_ping=True,
        # The pool hands a connection to one thread at a time, so sharing across threads is safe.
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT},
        # An in-memory database lives in its connection: keep exactly one (single-threaded use, e.g. a demo).
        **({"poolclass": sa.pool.StaticPool} if in_memory else {}),
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not the sqlite3 module, emit BEGIN (the module's own handling defers it to the first
        # write, which breaks read-validate-write transactions); see SQLAlchemy's "pysqlite serializable" recipe.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        if not in_memory:
            # Readers do not block the writer nor the writer readers; one process, many threads.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection):
        # Writers take the write lock up front, so that the set they validate is the set they change.
        mode = "IMMEDIATE" if connection.get_execution_options().get("desp_write") else "DEFERRED"
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _stored(row) -> StoredProfile:
    return StoredProfile(
        profile=Profile.from_dict(row.data),
        version=row.version,
        updated_at=_utc(row.updated_at),
        updated_by=row.updated_by,
    )


def _audit_entry(row) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        at=_utc(row.at),
        actor=row.actor,
        action=row.action,
        slug=row.slug,
        before=row.before,
        after=row.after,
    )


class ProfileStore:
    """Server profiles in a SQL database (SQLAlchemy URL), with optimistic versions and an audit trail.

    `profiles()` is what the spawner reads at every spawn; the admin service uses the rest. Call `upgrade()` once
    at start-up (it is idempotent and safe when several processes start at once), then `seed_if_empty(path)`.
    """

    def __init__(self, url: str):
        """`url`: a SQLAlchemy URL, e.g. `sqlite:////srv/jupyterhub/desp_profiles.sqlite` (a relative path is taken
        from the working directory) or `postgresql+psycopg://user:password@host/dbname`."""
        self.engine = _make_engine(url)  # the URL (with its password) is kept only inside the engine

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.engine.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        """Close the pooled connections."""
        self.engine.dispose()

    # -- schema ----------------------------------------------------------------------------------------------------

    def upgrade(self, revision: str = "head") -> None:
        """Bring the schema to `revision` (default: the newest) with the shipped Alembic migrations."""
        from alembic import command

        with self._writing(lock_profiles=False) as connection:
            if connection.dialect.name == "postgresql":
                # Two hubs starting at once must not both create the tables.
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            command.upgrade(alembic_config(connection), revision)

    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (None: never upgraded)."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"version_table": ALEMBIC_VERSION_TABLE})
            return context.get_current_revision()

    # -- reading ---------------------------------------------------------------------------------------------------

    def list_profiles(self) -> list[StoredProfile]:
        """All stored profiles, by (order, slug)."""
        with self.engine.connect() as connection:
            return self._all(connection)

    def profiles(self) -> list[Profile]:
        """The plain profiles, by (order, slug): what the spawner offers and checks."""
        return [stored.profile for stored in self.list_profiles()]

    def get(self, slug: str) -> StoredProfile:
        """The stored profile `slug`; raises `ProfileNotFound`."""
        with self.engine.connect() as connection:
            return self._get(connection, slug)

    def audit(self, limit: int = 100, slug: str | None = None) -> list[AuditEntry]:
        """The latest `limit` changes (of one profile, with `slug`), newest first."""
        query = sa.select(audit_table).order_by(audit_table.c.id.desc()).limit(limit)
        if slug is not None:
            query = query.where(audit_table.c.slug == slug)
        with self.engine.connect() as connection:
            return [_audit_entry(row) for row in connection.execute(query)]

    def export_yaml(self) -> str:
        """All profiles as a profiles YAML document (the schema of profiles.yaml, read back by `load_profiles`)."""
        document = {"profiles": [profile.to_dict() for profile in self.profiles()]}
        header = f"# DESP Hub server profiles, exported {_iso(_now())}; sizes in bytes, times in seconds.\n"
        return header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True)

    # -- writing ---------------------------------------------------------------------------------------------------

    def seed_if_empty(self, path: str | Path) -> int:
        """Copy the profiles of the YAML file at `path` into an empty store; return how many were inserted."""
        seed = load_profiles(path)
        with self._writing() as connection:
            if connection.execute(sa.select(sa.func.count()).select_from(profiles_table)).scalar_one():
                return 0
            now = _now()
            for profile in seed:
                self._insert(connection, profile, actor="seed", action="import", now=now)
        return len(seed)

    def create(self, data: Mapping[str, Any], actor: str) -> StoredProfile:
        """Add a profile (version 1). Raises `ProfileError` if it or the resulting set is invalid."""
        profile = Profile.from_dict(data)
        with self._writing() as connection:
            current = {stored.slug: stored.profile for stored in self._all(connection)}
            validate_profiles([*current.values(), profile])
            return self._insert(connection, profile, actor=actor, action="create", now=_now())

    def update(self, slug: str, data: Mapping[str, Any], expected_version: int, actor: str) -> StoredProfile:
        """Replace every field of profile `slug` with `data` (whose slug, if any, must be `slug`)."""
        data = dict(data)
        if data.get("slug") is None:  # absent (None counts as absent, as in Profile.from_dict)
            data["slug"] = slug
        if data["slug"] != slug:
            raise ProfileError(
                f"cannot be changed from {slug!r} to {data['slug']!r}: create a new profile and delete this one",
                field="slug",
                slug=slug,
            )
        profile = Profile.from_dict(data)
        return self._replace(slug, lambda _old: profile, expected_version, actor, "update")

    def set_enabled(self, slug: str, enabled: bool, expected_version: int, actor: str) -> StoredProfile:
        """Enable or disable profile `slug` (a disabled profile is hidden and refuses spawns)."""
        if not isinstance(enabled, bool):
            raise ProfileError(f"expected true or false, got {enabled!r}", field="enabled", slug=slug)
        action = "enable" if enabled else "disable"
        return self._replace(
            slug, lambda old: dataclasses.replace(old, enabled=enabled), expected_version, actor, action
        )

    def delete(self, slug: str, expected_version: int, actor: str) -> None:
        """Remove profile `slug` (its audit entries stay)."""
        with self._writing() as connection:
            old = self._check_version(connection, slug, expected_version)
            deleted = connection.execute(
                sa.delete(profiles_table).where(
                    profiles_table.c.slug == slug, profiles_table.c.version == expected_version
                )
            )
            if deleted.rowcount != 1:
                self._raise_conflict(connection, slug, expected_version)
            self._log(connection, _now(), actor, "delete", slug, old.profile, None)

    def import_yaml(self, text: str, actor: str) -> list[StoredProfile]:
        """Replace ALL profiles with those of a profiles YAML document, atomically; return the new set.

        The whole document is validated first (nothing changes if any profile is invalid). Changed profiles get a
        new version, unchanged ones keep theirs, missing ones are deleted; each change is audited as "import".
        """
        imported = parse_profiles_yaml(text)
        with self._writing() as connection:
            current = {stored.slug: stored for stored in self._all(connection)}
            now = _now()
            for profile in imported:
                old = current.get(profile.slug)
                if old is None:
                    self._insert(connection, profile, actor=actor, action="import", now=now)
                elif old.profile != profile:
                    self._write_row(connection, old, profile, actor, "import", now)
            kept = {profile.slug for profile in imported}
            for slug, old in current.items():
                if slug not in kept:
                    connection.execute(sa.delete(profiles_table).where(profiles_table.c.slug == slug))
                    self._log(connection, now, actor, "import", slug, old.profile, None)
            return self._all(connection)

    # -- internals -------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _writing(self, *, lock_profiles: bool = True) -> Iterator[Connection]:
        """A write transaction holding the store's write lock (see the module docstring)."""
        with self.engine.connect() as connection:
            connection.execution_options(desp_write=True)  # SQLite: BEGIN IMMEDIATE
            with connection.begin():
                if lock_profiles:
                    self._lock_writers(connection)
                yield connection

    @staticmethod
    def _lock_writers(connection: Connection) -> None:
        # Writers queue here, readers (plain SELECT) do not: the set a writer validates is the set it changes, even
        # with concurrent admins (two "default: true" creates cannot both pass). SHARE ROW EXCLUSIVE conflicts with
        # itself and with row changes, not with reads. SQLite needs nothing: BEGIN IMMEDIATE took its write lock.
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("LOCK TABLE profiles IN SHARE ROW EXCLUSIVE MODE")

    @staticmethod
    def _all(connection: Connection) -> list[StoredProfile]:
        stored = [_stored(row) for row in connection.execute(sa.select(profiles_table))]
        return sorted(stored, key=lambda s: (s.profile.order, s.profile.slug))

    @staticmethod
    def _get(connection: Connection, slug: str) -> StoredProfile:
        row = connection.execute(sa.select(profiles_table).where(profiles_table.c.slug == slug)).first()
        if row is None:
            raise ProfileNotFound(slug)
        return _stored(row)

    def _check_version(self, connection: Connection, slug: str, expected_version: int) -> StoredProfile:
        current = self._get(connection, slug)
        if current.version != expected_version:
            raise VersionConflict(slug, expected_version, current.version, current.updated_by, current.updated_at)
        return current

    def _raise_conflict(self, connection: Connection, slug: str, expected_version: int):
        current = self._get(connection, slug)  # ProfileNotFound if it was deleted meanwhile
        raise VersionConflict(slug, expected_version, current.version, current.updated_by, current.updated_at)

    def _replace(self, slug, change, expected_version: int, actor: str, action: str) -> StoredProfile:
        with self._writing() as connection:
            old = self._check_version(connection, slug, expected_version)
            new = change(old.profile)
            others = [s.profile for s in self._all(connection) if s.slug != slug]
            validate_profiles([*others, new])
            return self._write_row(connection, old, new, actor, action, _now())

    def _write_row(self, connection, old: StoredProfile, new: Profile, actor, action, now) -> StoredProfile:
        # Conditional on the version read: a concurrent writer that got there first makes this match no row.
        result = connection.execute(
            sa.update(profiles_table)
            .where(profiles_table.c.slug == old.slug, profiles_table.c.version == old.version)
            .values(data=new.to_dict(), version=old.version + 1, updated_at=now, updated_by=actor)
        )
        if result.rowcount != 1:
            self._raise_conflict(connection, old.slug, old.version)
        self._log(connection, now, actor, action, old.slug, old.profile, new)
        return StoredProfile(profile=new, version=old.version + 1, updated_at=now, updated_by=actor)

    def _insert(self, connection, profile: Profile, *, actor: str, action: str, now) -> StoredProfile:
        connection.execute(
            sa.insert(profiles_table).values(
                slug=profile.slug, data=profile.to_dict(), version=1, updated_at=now, updated_by=actor
            )
        )
        self._log(connection, now, actor, action, profile.slug, None, profile)
        return StoredProfile(profile=profile, version=1, updated_at=now, updated_by=actor)

    @staticmethod
    def _log(connection, now, actor: str, action: str, slug: str, before: Profile | None, after: Profile | None):
        assert action in ACTIONS, action
        connection.execute(
            sa.insert(audit_table).values(
                at=now,
                actor=actor,
                action=action,
                slug=slug,
                before=before.to_dict() if before is not None else None,
                after=after.to_dict() if after is not None else None,
            )
        )


@functools.cache
def migrated_store(url: str) -> ProfileStore:
    """One store (engine and connection pool) per URL and process, migrated on first use."""
    store = ProfileStore(url)
    store.upgrade()
    return store


@functools.cache
def seeded_store(url: str, seed_path: str) -> ProfileStore:
    """The store at `url`, migrated and seeded from `seed_path` when empty, once per hub process (the spawners'
    and the culler's view of the profiles)."""
    store = migrated_store(url)
    store.seed_if_empty(seed_path)
    return store
