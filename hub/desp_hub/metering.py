"""Hub metering: every running server costs its profile's DCUs per hour, debited interval by interval.

How a session is metered:

- A *session* is one run of one server: `{user}/{server_name}/{started}` (`session_id`), where `started` is the
  hub's `started` time of the server truncated to the second (ISO 8601, UTC, `Z`). The server gets it as
  `DESP_SESSION_ID`; every transaction of the session carries it in its `session` field.
- Intervals are counted from `started`: interval `i` covers `[started + i*I, started + (i+1)*I)` where `I` is
  `DespMetering.interval_seconds` as recorded for the session when it was first seen (so a changed setting applies
  to the next sessions, never shifts the keys of a running one). Each complete interval is one debit with the
  idempotency key `jupyterhub:{user}:{server_name}:{started_epoch}:{i}`; at stop, the partial interval since the
  last complete one is one more debit keyed `...:final`. Keys depend only on the server and the interval, so a
  retry, a hub restart or two writers racing never produce a second debit (the outbox is unique on the key and the
  accounting service answers a replayed key with the first transaction).
- The amount of `s` seconds at `p` DCU per hour, in integer milli-DCU: `round(p * 1000 * s / 3600)`, computed in
  decimal arithmetic and rounded half up (`amount_milli`). Each interval is rounded on its own. An amount that
  rounds to 0 (a free profile, a stop a few milliseconds after an interval boundary) is not recorded: the
  accounting service refuses zero amounts.
- The price is recorded per session at first sight (by the spawner when the server starts, else by the metering
  service when it first lists the server) and stays that of the session, even if an admin edits the profile later.
  The spawner puts the profile's price in the server's `user_options["dcu_per_hour"]` (next to `profile`), which the
  hub REST API shows with the `read:servers` scope alone, so the service needs no access to server state.

The outbox (`metering_outbox`, Alembic revision 0004 in the profile store's database) is durable: transactions are
written there first and delivered to the accounting service afterwards (`deliver_pending`), oldest first; while the
accounting service is down they stay `pending` and usage is only delayed, never lost.

Blocking I/O (database, HTTP): from a coroutine, call these functions in a worker thread (`asyncio.to_thread`).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, ClassVar

import desp_lab.credentials
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from traitlets import CaselessStrEnum, Float, Integer, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from .profile_store import metadata, migrated_store

__all__ = [
    "SERVICE",
    "ClientCredentials",
    "DebitOutbox",
    "DespMetering",
    "MeteringOutbox",
    "amount_milli",
    "complete_intervals",
    "deliver_pending",
    "format_dcu",
    "interval_bounds",
    "interval_key",
    "session_id",
    "spawn_refusal",
]

log = logging.getLogger(__name__)

#: The `service` field of every transaction the hub records.
SERVICE = "jupyterhub"

PENDING, DELIVERED, REJECTED = "pending", "delivered", "rejected"


class DespMetering(LoggingConfigurable):
    """Metering of servers in DCUs: intervals, prices and the accounting service they are recorded with.

    The client secret of `client_id` comes only from the environment variable `DESP_METERING_CLIENT_SECRET`
    (never from a configuration file or the command line, and never logged).
    """

    accounting_url = Unicode(
        config=True,
        help="""
        Root URL of the accounting service (DCU balances, quotas and transactions, API under /api/v1). Empty:
        metering is off (no transactions, no balance check at spawn). Default: $DESP_ACCOUNTING_URL.
        """,
    )

    @default("accounting_url")
    def _accounting_url_default(self):
        return os.environ.get("DESP_ACCOUNTING_URL", "")

    interval_seconds = Integer(
        300,
        config=True,
        help="""
        Length of a metering interval in seconds: every complete interval of a running server is one debit at its
        profile's price, plus one for the partial interval at stop. A session keeps the interval it started with.
        The spawn check asks for the price of one interval.
        """,
    )

    poll_seconds = Float(
        0,
        config=True,
        help="""
        Seconds between two passes of the metering service (list the running servers, queue the intervals that
        completed, deliver what is queued). 0: a fifth of `interval_seconds`, at least 1 second.
        """,
    )

    token_url = Unicode(
        config=True,
        help="""
        OAuth 2 token endpoint where the hub gets its access token for the accounting service, with the client
        credentials grant of `client_id` (e.g. `https://iam.example/realms/desp/protocol/openid-connect/token`).
        """,
    )

    client_id = Unicode(
        "desp-metering",
        config=True,
        help="""
        Confidential client (service account with the realm role `dcu-meter`) the hub records debits as. Its
        secret is read from the environment variable DESP_METERING_CLIENT_SECRET.
        """,
    )

    client_secret = Unicode(
        help="The secret of `client_id`: $DESP_METERING_CLIENT_SECRET only (not configurable, never logged)."
    )

    @default("client_secret")
    def _client_secret_default(self):
        return os.environ.get("DESP_METERING_CLIENT_SECRET", "")

    db_url = Unicode(
        config=True,
        help="""
        SQLAlchemy URL of the database holding the metering outbox (sessions and queued transactions). Default: the
        profile store's URL (`DespProfilesMixin.profiles_url`), else $DESP_PROFILES_DB_URL, else `profiles.sqlite`
        in the hub's working directory. For PostgreSQL give the password in PGPASSWORD, not in the URL.
        """,
    )

    @default("db_url")
    def _db_url_default(self):
        parent_url = getattr(self.parent, "profiles_url", "") if self.parent is not None else ""
        return (
            parent_url
            or os.environ.get("DESP_PROFILES_DB_URL", "")
            or f"sqlite:///{os.path.join(os.getcwd(), 'profiles.sqlite')}"
        )

    when_accounting_down = CaselessStrEnum(
        ["refuse", "allow"],
        default_value="refuse",
        config=True,
        help="""
        What a spawn does when the accounting service cannot be asked for the user's balance: `refuse` (the user
        is asked to try again later) or `allow` (the server starts; its usage is queued and debited when the
        service is back). Either way the hub logs it.
        """,
    )

    @validate("interval_seconds")
    def _positive_interval(self, proposal):
        if proposal.value < 1:
            raise ValueError(f"interval_seconds must be at least 1 second, got {proposal.value}")
        return proposal.value

    @validate("poll_seconds")
    def _non_negative_poll(self, proposal):
        if proposal.value < 0:
            raise ValueError(f"poll_seconds must be 0 (a fifth of interval_seconds) or positive, got {proposal.value}")
        return proposal.value

    @property
    def enabled(self) -> bool:
        return bool(self.accounting_url)

    @property
    def effective_poll_seconds(self) -> float:
        """`poll_seconds`, or a fifth of the interval when 0; never less than 1 second."""
        return max(1.0, self.poll_seconds or self.interval_seconds / 5)

    def token_source(self) -> ClientCredentials:
        """The hub's access token for the accounting service (client credentials, cached)."""
        return ClientCredentials(self.token_url, self.client_id, self.client_secret)

    def accounting(self, token=None, **options):
        """A `desp_lab.accounting.Accounting` client of `accounting_url` (token: the client credentials).

        `options` go to the client (`timeout`, `retries`, ...): few retries, since the caller retries anyway (the
        service at its next pass) or must answer a person soon (the spawn check).
        """
        from desp_lab.accounting import Accounting  # the hub uses desp_lab's client, as any platform client would

        options = {"timeout": 10, "retries": 1, "backoff": 0.5, **options}
        return Accounting(self.accounting_url, token=token if token is not None else self.token_source(), **options)

    def outbox(self) -> MeteringOutbox:
        return MeteringOutbox(self.db_url)


def hub_metering(config) -> DespMetering:
    """`DespMetering` as the hub being configured will see it: `config` (the configuration file's `c`) with the
    hub's command line on top (`--DespMetering.accounting_url=...` from `desp-hub up`).

    A configuration file cannot see the command line (traitlets loads each file into a fresh Config), but whether
    to install the metering service must be decided in the file; the command line is read from the running
    JupyterHub application, when there is one.
    """
    from jupyterhub.app import JupyterHub
    from traitlets.config import Config

    merged = Config()
    merged.merge(config)
    if JupyterHub.initialized():
        merged.merge(JupyterHub.instance().cli_config)
    return DespMetering(config=merged)


# -- interval arithmetic (pure) ----------------------------------------------------------------------------------


def utc(value: datetime.datetime) -> datetime.datetime:
    """An aware UTC datetime; a naive one is taken as UTC (the hub and SQLite store naive UTC)."""
    return value.replace(tzinfo=datetime.UTC) if value.tzinfo is None else value.astimezone(datetime.UTC)


def parse_time(value: str | datetime.datetime | None) -> datetime.datetime | None:
    """A hub API time (`2026-11-26T01:55:20.123456Z`) or datetime as an aware UTC datetime; None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime.datetime):
        return utc(value)
    return utc(datetime.datetime.fromisoformat(value.replace("Z", "+00:00")))


def session_start(started: datetime.datetime) -> datetime.datetime:
    """The start of a session's first interval: the server's `started`, in UTC, truncated to the second."""
    return utc(started).replace(microsecond=0)


def iso(value: datetime.datetime) -> str:
    """ISO 8601 in UTC with `Z` (microseconds only when there are some)."""
    return utc(value).isoformat().replace("+00:00", "Z")


def session_id(user: str, server_name: str, started: datetime.datetime) -> str:
    """`{user}/{server_name}/{started_iso}`: the transactions' `session` field and the server's DESP_SESSION_ID."""
    return f"{user}/{server_name}/{iso(session_start(started))}"


def _key_prefix(user: str, server_name: str, started: datetime.datetime) -> str:
    return f"{SERVICE}:{user}:{server_name}:{int(session_start(started).timestamp())}"


def interval_key(user: str, server_name: str, started: datetime.datetime, index: int | None) -> str:
    """Idempotency key of interval `index` of a session (`None`: the final partial interval, `...:final`)."""
    return f"{_key_prefix(user, server_name, started)}:{'final' if index is None else int(index)}"


def complete_intervals(started: datetime.datetime, interval_seconds: int, now: datetime.datetime) -> int:
    """How many whole intervals have elapsed between the session start and `now` (0 before the first ends)."""
    elapsed = utc(now) - session_start(started)
    return max(0, elapsed // datetime.timedelta(seconds=interval_seconds))


def interval_bounds(
    started: datetime.datetime, interval_seconds: int, index: int
) -> tuple[datetime.datetime, datetime.datetime]:
    """`[start, end)` of interval `index` of a session."""
    start = session_start(started) + datetime.timedelta(seconds=interval_seconds * index)
    return start, start + datetime.timedelta(seconds=interval_seconds)


def _decimal(value: Any, *, signed: bool = False) -> Decimal:
    """`value` as an exact Decimal (a float by its str, as the profile YAML wrote it); ValueError if not a finite
    number, or a negative one unless `signed`."""
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None
    if not number.is_finite() or (number < 0 and not signed):
        raise ValueError(f"not a {'' if signed else 'non-negative '}number: {value!r}")
    return number


def amount_milli(dcu_per_hour: Any, seconds: Any) -> int:
    """milli-DCU for `seconds` at `dcu_per_hour`: round(p * 1000 * s / 3600), exact decimals, halves rounded up.

    >>> amount_milli(1, 300), amount_milli("2.5", 300), amount_milli(1, 1.8)
    (83, 208, 1)
    """
    exact = _decimal(dcu_per_hour) * 1000 * _decimal(seconds) / 3600
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def format_dcu(milli: int) -> str:
    """milli-DCU as the accounting API writes amounts: `1250` → `"1.250"`."""
    sign = "-" if milli < 0 else ""
    whole, fraction = divmod(abs(int(milli)), 1000)
    return f"{sign}{whole}.{fraction:03d}"


def price_text(dcu_per_hour: Any) -> str:
    """A price per hour without useless zeros: `2.0` → `"2"`, `"0.25"` → `"0.25"`."""
    return format(_decimal(dcu_per_hour).normalize(), "f")


def duration_text(seconds: int) -> str:
    """`300` → "5-minute", `90` → "90-second", `3600` → "1-hour" (to name an interval)."""
    if seconds % 3600 == 0:
        return f"{seconds // 3600}-hour"
    if seconds % 60 == 0:
        return f"{seconds // 60}-minute"
    return f"{seconds}-second"


def spawn_refusal(
    *,
    available: Any,
    mode: str,
    profile_name: str,
    dcu_per_hour: Any,
    interval_seconds: int,
) -> str | None:
    """The message refusing a spawn when `available` DCUs do not cover the first interval, else None.

    It says what the user has (balance in advance mode, what is left of the monthly quota in arrears mode), what the
    profile costs per hour and for the first interval, and what to do.
    """
    first = amount_milli(dcu_per_hour, interval_seconds)
    available_milli = int((_decimal(available, signed=True) * 1000).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    if first == 0 or available_milli >= first:
        return None
    have = (
        f"What is left of your monthly DCU quota is {format_dcu(available_milli)} DCU"
        if mode == "arrears"
        else f"Your available DCU balance is {format_dcu(available_milli)} DCU"
    )
    return (
        f"{have}, and the {profile_name} profile costs {price_text(dcu_per_hour)} DCU per hour: "
        f"{format_dcu(first)} DCU for its first {duration_text(interval_seconds)} interval. "
        "Choose a cheaper profile, or ask your DESP administrator for more credit."
    )


# -- the outbox (durable, in the profile store's database) -------------------------------------------------------

# Part of the store's head schema (profile_store.metadata), which the migrations must build exactly (0004).
sessions_table = sa.Table(
    "metering_sessions",
    metadata,
    sa.Column("session", sa.String(600), primary_key=True),
    sa.Column("username", sa.String(255), nullable=False),
    sa.Column("server_name", sa.String(255), nullable=False),
    sa.Column("started", sa.DateTime(timezone=True), nullable=False),
    sa.Column("profile", sa.String(63), nullable=True),
    sa.Column("dcu_per_hour", sa.String(32), nullable=False),
    sa.Column("interval_seconds", sa.Integer, nullable=False),
    sa.Column("next_index", sa.Integer, nullable=False),
    sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
    sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_metering_sessions_server", "username", "server_name"),
)

def debit_columns() -> list[sa.Column]:
    """The columns every debit outbox table ends with (the servers' here, the Dask workers' in
    `desp_hub.dask_gateway.metering`): the debited period and amount, and the delivery state `DebitOutbox` reads
    and updates. New objects at each call (a column belongs to one table)."""
    return [
        sa.Column("interval_index", sa.Integer, nullable=True),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("amount_milli", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("transaction_id", sa.String(64), nullable=True),
    ]


outbox_table = sa.Table(
    "metering_outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("idempotency_key", sa.String(200), nullable=False),
    sa.Column("session", sa.String(600), nullable=False),
    sa.Column("username", sa.String(255), nullable=False),
    sa.Column("server_name", sa.String(255), nullable=False),
    sa.Column("profile", sa.String(63), nullable=True),
    sa.Column("dcu_per_hour", sa.String(32), nullable=False),
    *debit_columns(),
    sa.UniqueConstraint("idempotency_key", name="uq_metering_outbox_key"),
    sa.Index("ix_metering_outbox_status", "status", "id"),
    sa.Index("ix_metering_outbox_session", "session"),
)


@dataclasses.dataclass(frozen=True)
class Session:
    """A metered session as recorded: its price and interval are those of its first sight."""

    session: str
    username: str
    server_name: str
    started: datetime.datetime
    profile: str | None
    dcu_per_hour: str
    interval_seconds: int
    next_index: int
    first_seen: datetime.datetime
    stopped_at: datetime.datetime | None

    @classmethod
    def from_row(cls, row) -> Session:
        return cls(
            session=row.session,
            username=row.username,
            server_name=row.server_name,
            started=utc(row.started),
            profile=row.profile,
            dcu_per_hour=row.dcu_per_hour,
            interval_seconds=row.interval_seconds,
            next_index=row.next_index,
            first_seen=utc(row.first_seen),
            stopped_at=utc(row.stopped_at) if row.stopped_at is not None else None,
        )


@dataclasses.dataclass(frozen=True)
class QueuedDebit:
    """What a row of every debit outbox shares (this one, and the Dask workers' in `desp_hub.dask_gateway.metering`):
    the fields of `debit_columns()` and the key; made from a table row with its times as aware UTC datetimes. A
    subclass adds its table's own columns."""

    TIMES: ClassVar[tuple[str, ...]] = ("period_start", "period_end", "created_at", "delivered_at")

    id: int
    idempotency_key: str
    username: str
    interval_index: int | None
    period_start: datetime.datetime
    period_end: datetime.datetime
    amount_milli: int
    status: str
    created_at: datetime.datetime
    attempts: int
    last_error: str | None
    delivered_at: datetime.datetime | None
    transaction_id: str | None

    @classmethod
    def from_row(cls, row):
        values = dict(row._mapping)
        for name in cls.TIMES:
            if values[name] is not None:
                values[name] = utc(values[name])
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class OutboxRow(QueuedDebit):
    """One queued transaction (a debit of one interval of one session)."""

    session: str
    server_name: str
    profile: str | None
    dcu_per_hour: str

    def transaction(self) -> dict[str, Any]:
        """The fields of the accounting transaction (besides user, kind, amount and key): always the same for a row,
        so a retry sends the same body (same key + different body would be a 409)."""
        what = "final partial interval" if self.interval_index is None else f"interval {self.interval_index}"
        return {
            "service": SERVICE,
            "profile": self.profile,
            "session": self.session,
            "description": f"JupyterLab server{f' {self.server_name!r}' if self.server_name else ''}"
            f" ({self.profile or 'no profile'}), {what}",
            "period_start": iso(self.period_start),
            "period_end": iso(self.period_end),
            "metadata": {
                "server_name": self.server_name,
                "interval": "final" if self.interval_index is None else self.interval_index,
                "seconds": format(seconds_between(self.period_start, self.period_end).normalize(), "f"),
                "dcu_per_hour": self.dcu_per_hour,
            },
        }


def seconds_between(start: datetime.datetime, end: datetime.datetime) -> Decimal:
    """The exact length of `[start, end)` in seconds (microsecond precision)."""
    return Decimal((end - start) // datetime.timedelta(microseconds=1)).scaleb(-6)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _insert_ignoring_duplicates(connection, table: sa.Table, values: dict[str, Any]) -> bool:
    """INSERT that does nothing when the row (primary or unique key) exists already; True when it inserted."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        statement = postgresql.insert(table).values(values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(table).values(values).on_conflict_do_nothing()
    else:  # pragma: no cover - the store supports SQLite and PostgreSQL
        statement = sa.insert(table).values(values)
    # RETURNING tells whether a row went in (rowcount is not reliable for ON CONFLICT across drivers).
    return connection.execute(statement.returning(*table.primary_key.columns)).first() is not None


class DebitOutbox:
    """A durable queue of debits in one table: reading its rows and recording each delivery attempt (`pending`,
    `mark_delivered`, `mark_failed` are what `deliver_pending` uses). The hub's servers (`MeteringOutbox`) and the
    Dask workers (`desp_hub.dask_gateway.metering.UsageOutbox`) each have one; a subclass names its `table` (with
    the columns id, status, attempts, last_error, delivered_at, transaction_id) and `row_class`, and writes rows."""

    table: sa.Table
    row_class: type[QueuedDebit]
    engine: sa.Engine

    def _select_rows(self, status: str | None = None, limit: int | None = None, **equal: Any) -> list:
        """The rows, oldest first, with `status` and the columns named in `equal` (those not None) as given."""
        query = sa.select(self.table).order_by(self.table.c.id)
        for name, value in equal.items():
            if value is not None:
                query = query.where(self.table.c[name] == value)
        if status is not None:
            query = query.where(self.table.c.status == status)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as connection:
            return [self.row_class.from_row(row) for row in connection.execute(query)]

    def _insert_pending(self, connection, created_at: datetime.datetime, values: dict[str, Any]) -> bool:
        """Queue one debit, pending and never tried, unless its key is queued already; True when it went in."""
        delivery = {"status": PENDING, "created_at": utc(created_at), "attempts": 0, "last_error": None,
                    "delivered_at": None, "transaction_id": None}  # fmt: skip
        return _insert_ignoring_duplicates(connection, self.table, {**values, **delivery})

    def pending(self, limit: int = 100) -> list:
        return self._select_rows(status=PENDING, limit=limit)

    def mark_delivered(self, row_id: int, transaction_id: str | None, at: datetime.datetime | None = None) -> None:
        table = self.table
        with self.engine.begin() as connection:
            connection.execute(
                sa.update(table)
                .where(table.c.id == row_id)
                .values(status=DELIVERED, delivered_at=utc(at) if at else _now(), transaction_id=transaction_id,
                        attempts=table.c.attempts + 1, last_error=None)
            )

    def mark_failed(self, row_id: int, error: str, *, rejected: bool = False) -> None:
        """Count a failed attempt; a `rejected` row (refused for good by the service) is not retried."""
        table = self.table
        values: dict[str, Any] = {"attempts": table.c.attempts + 1, "last_error": error[:2000]}
        if rejected:
            values["status"] = REJECTED
        with self.engine.begin() as connection:
            connection.execute(sa.update(table).where(table.c.id == row_id).values(values))


class MeteringOutbox(DebitOutbox):
    """Sessions and their queued transactions in the profile store's database (migrated on first use).

    Writers (the hub's spawner at start and stop, the metering service at every pass) serialise on the session:
    SQLite takes its write lock up front (BEGIN IMMEDIATE), PostgreSQL locks the session row (FOR UPDATE). So
    whatever the order, the complete intervals and the final one of a session are each written once.
    """

    table = outbox_table
    row_class = OutboxRow

    def __init__(self, url: str):
        self.url = url
        self.engine = migrated_store(url).engine

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.engine.url.render_as_string(hide_password=True)!r})"

    def _writing(self):
        connection = self.engine.connect()
        connection.execution_options(desp_write=True)  # SQLite: BEGIN IMMEDIATE (profile_store._make_engine)
        return connection

    @staticmethod
    def _locked_session(connection, session: str) -> Session | None:
        query = sa.select(sessions_table).where(sessions_table.c.session == session)
        if connection.dialect.name == "postgresql":
            query = query.with_for_update()
        row = connection.execute(query).first()
        return Session.from_row(row) if row is not None else None

    # -- sessions ----------------------------------------------------------------------------------------------

    def open_session(
        self,
        username: str,
        server_name: str,
        started: datetime.datetime,
        profile: str | None,
        dcu_per_hour: Any,
        interval_seconds: int,
        now: datetime.datetime | None = None,
    ) -> Session:
        """Record a session at first sight (its price and interval then stay); returns the session as recorded."""
        sid = session_id(username, server_name, started)
        values = {
            "session": sid,
            "username": username,
            "server_name": server_name,
            "started": session_start(started),
            "profile": profile,
            "dcu_per_hour": price_text(dcu_per_hour),
            "interval_seconds": int(interval_seconds),
            "next_index": 0,
            "first_seen": utc(now) if now is not None else _now(),
            "stopped_at": None,
        }
        with self._writing() as connection, connection.begin():
            _insert_ignoring_duplicates(connection, sessions_table, values)
            return self._locked_session(connection, sid)

    def session(self, session: str) -> Session | None:
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(sessions_table).where(sessions_table.c.session == session)).first()
        return Session.from_row(row) if row is not None else None

    def sessions(self, username: str | None = None) -> list[Session]:
        query = sa.select(sessions_table).order_by(sessions_table.c.started, sessions_table.c.session)
        if username is not None:
            query = query.where(sessions_table.c.username == username)
        with self.engine.connect() as connection:
            return [Session.from_row(row) for row in connection.execute(query)]

    def enqueue_elapsed(self, session: str, now: datetime.datetime | None = None) -> int:
        """Queue every complete interval of a running session not queued yet; returns how many were queued.

        A stopped session gets nothing more here (its stop queued the rest).
        """
        with self._writing() as connection, connection.begin():
            current = self._locked_session(connection, session)
            if current is None or current.stopped_at is not None:
                return 0
            # `now` is read inside the write transaction, after any stop that committed before it.
            now = utc(now) if now is not None else _now()
            count = complete_intervals(current.started, current.interval_seconds, now)
            return self._queue_intervals(connection, current, count, now)

    def close_sessions(
        self, username: str, server_name: str, stopped_at: datetime.datetime | None = None
    ) -> list[Session]:
        """Stop every open session of a server: queue its missing complete intervals and the final partial one.

        The stop time is read inside the write transaction (unless given), so it is never earlier than an interval
        the metering service queued before. Returns the sessions closed (with `stopped_at`).
        """
        closed = []
        with self._writing() as connection, connection.begin():
            open_ids = connection.execute(
                sa.select(sessions_table.c.session).where(
                    sessions_table.c.username == username,
                    sessions_table.c.server_name == server_name,
                    sessions_table.c.stopped_at.is_(None),
                )
            ).scalars().all()
            at = utc(stopped_at) if stopped_at is not None else _now()
            for sid in open_ids:
                current = self._locked_session(connection, sid)
                if current is None or current.stopped_at is not None:
                    continue
                count = complete_intervals(current.started, current.interval_seconds, at)
                self._queue_intervals(connection, current, count, at)
                self._queue_final(connection, current, max(count, current.next_index), at)
                connection.execute(
                    sa.update(sessions_table).where(sessions_table.c.session == sid).values(stopped_at=at)
                )
                closed.append(dataclasses.replace(current, stopped_at=at, next_index=max(count, current.next_index)))
        return closed

    def _queue_intervals(self, connection, current: Session, count: int, now: datetime.datetime) -> int:
        queued = 0
        for index in range(current.next_index, count):
            start, end = interval_bounds(current.started, current.interval_seconds, index)
            queued += self._queue(connection, current, index, start, end, now)
        if count > current.next_index:
            connection.execute(
                sa.update(sessions_table).where(sessions_table.c.session == current.session).values(next_index=count)
            )
        return queued

    def _queue_final(self, connection, current: Session, complete: int, stopped_at: datetime.datetime) -> int:
        start = interval_bounds(current.started, current.interval_seconds, complete)[0]
        if stopped_at <= start:
            return 0
        return self._queue(connection, current, None, start, stopped_at, stopped_at)

    def _queue(self, connection, current: Session, index, start, end, now) -> int:
        amount = amount_milli(current.dcu_per_hour, seconds_between(start, end))
        if amount == 0:
            return 0  # nothing to debit (free profile, or a few milliseconds): the accounting refuses 0
        return int(
            self._insert_pending(
                connection,
                now,
                {
                    "idempotency_key": interval_key(current.username, current.server_name, current.started, index),
                    "session": current.session,
                    "username": current.username,
                    "server_name": current.server_name,
                    "profile": current.profile,
                    "dcu_per_hour": current.dcu_per_hour,
                    "interval_index": index,
                    "period_start": start,
                    "period_end": end,
                    "amount_milli": amount,
                },
            )
        )

    # -- rows ----------------------------------------------------------------------------------------------------

    def rows(self, session: str | None = None, status: str | None = None, limit: int | None = None) -> list[OutboxRow]:
        """Queued transactions, oldest first."""
        return self._select_rows(status, limit, session=session)


# -- delivery ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Delivery:
    """What one `deliver_pending` call did; `outage` is the reason the service could not be reached (or "")."""

    delivered: int = 0
    rejected: int = 0
    outage: str = ""


#: Statuses of an answer that will not change on retry: the row is marked rejected (and logged), not retried.
PERMANENT_STATUSES = frozenset({400, 404, 409, 413, 422})


def deliver_pending(outbox: DebitOutbox, accounting, limit: int = 100) -> Delivery:
    """Send pending rows to the accounting service, oldest first, each with its idempotency key.

    Stops at the first row that cannot be delivered for a reason that may pass (the service or the identity
    provider is unreachable, a 5xx, a refused token): that row and the rest stay pending for the next call.
    A row the service refuses for good (4xx such as 400 or 409) is marked rejected and logged.
    """
    from desp_lab.errors import DespError

    result = Delivery()
    for row in outbox.pending(limit):
        try:
            transaction = accounting.record(
                row.username, "debit", format_dcu(row.amount_milli), row.idempotency_key, **row.transaction()
            )
        except DespError as error:
            if error.status in PERMANENT_STATUSES:
                log.error("Accounting refused %s for good (%s): %s", row.idempotency_key, error.status, error)
                outbox.mark_failed(row.id, str(error), rejected=True)
                result.rejected += 1
                continue
            outbox.mark_failed(row.id, str(error))
            result.outage = str(error)
            return result
        except (OSError, ValueError) as error:  # connection failures the client did not wrap, a garbled answer
            outbox.mark_failed(row.id, f"{type(error).__name__}: {error}")
            result.outage = f"{type(error).__name__}: {error}"
            return result
        outbox.mark_delivered(row.id, _transaction_id(transaction))
        result.delivered += 1
    return result


def _transaction_id(transaction) -> str | None:
    if isinstance(transaction, Mapping):
        value = transaction.get("id")
    else:
        value = getattr(transaction, "id", None)
    return str(value) if value is not None else None


# -- the hub's access token --------------------------------------------------------------------------------------


class ClientCredentials(desp_lab.credentials.ClientCredentials):
    """A callable returning the metering client's access token (the cached client credentials grant of
    `desp_lab.credentials`). A failure raises `desp_lab.errors.ServiceUnavailable` (the identity provider could not
    give a token), which callers treat as the accounting service being unreachable."""

    def unavailable(self, reason: str) -> Exception:
        from desp_lab.errors import ServiceUnavailable

        return ServiceUnavailable("identity provider", self.token_url or "(no DespMetering.token_url)", reason)
