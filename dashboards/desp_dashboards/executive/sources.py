"""Where the executive dashboard's numbers come from: pluggable sources, one per kind of record.

A source is anything with `name`, `title`, `restricted` and `load(filters) -> pandas.DataFrame` (the `Source`
protocol). It is built from the viewer's `DashboardContext` (`factory(context)`) and registered in `SOURCES`; the
store loads each source once per filter set (cached with a time to live) and the views aggregate its frame. A new
source is one class here plus a view spec in `views.VIEWS`: a new panel, not a rewrite.

Sources now:

- `hub_users` (`HubUsers`): the hub's registered users over its REST API (`GET /users?include_stopped_servers`,
  with the dashboards service's token): name, groups, created, last_activity, admin.
- `hub_servers` (`HubServers`): the users' servers (running, pending or stopped) with their profile from
  `user_options.profile`, started and last_activity.
- `hub_groups` (`HubGroups`): the hub's groups and their members (`GET /groups`).
- `dcu_debits` (`AccountingUsage`): every debit (DCU consumption) recorded by the accounting service in the period,
  read with `desp_lab.accounting.Accounting`: the users with usage come from the usage report
  (`group_by=user`), then each one's transactions. Needs a token with `executive-statistics` (or `dcu-admin`);
  with a lesser token the accounting service answers only for the caller, which the source refuses
  (`SourceUnavailable`) rather than pass one person's usage off as the platform's.
- `runs` (`Sessions`): runs rebuilt from the debits' `session`, `period_start` and `period_end` (the hub's metering
  records every server run as `{user}/{server}/{started}`). Its rows are generic: who, what, start, end, status
  (plus service and session), so workflow runs (issue 7) join as more rows of the same shape.
- `collections` (`CatalogueCollections`): the catalogue collections' spatial and temporal extents (with the
  viewer's own token), for the map of data footprints.

Not recorded anywhere yet, so not shown (no number is invented for them): logins per day (the hub keeps only each
user's last activity; the IdP's login events are not exported), catalogue searches (the STAC API logs no search
statistics), data volume read (the cache and the object store report no byte counts), published-workflow runs
(issue 7). Each becomes a source here once a service records it.

Frames use naive UTC timestamps (Excel cannot store time zones) and floats for DCU amounts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import pandas as pd
import requests

__all__ = [
    "ALL",
    "SOURCES",
    "AccountingUsage",
    "CatalogueCollections",
    "Filters",
    "HubGroups",
    "HubServers",
    "HubUsers",
    "Sessions",
    "Source",
    "SourceUnavailable",
    "cached_load",
    "missing_sources",
]

#: The filter value meaning "no restriction" (profile, service, group).
ALL = "All"
DEFAULT_DAYS = 30
HTTP_TIMEOUT_SECONDS = 15.0
#: Missing statistics, shown in the dashboard's "about" text until a source records them.
MISSING = (
    ("Logins per day", "the hub keeps only each user's last activity; the identity provider's login events are not "
                       "exported to the platform"),
    ("Catalogue searches", "the catalogue (STAC API) does not record search statistics"),
    ("Data volume read", "the data cache and object store do not report byte counts per user or collection"),
    ("Published-workflow runs", "workflows arrive with issue 7; their runs will join the Gantt view of runs"),
)  # fmt: skip


def missing_sources() -> tuple[tuple[str, str], ...]:
    """(statistic, why it is not shown yet) for the statistics the design asks for that nothing records yet."""
    return MISSING


class SourceUnavailable(Exception):
    """A source cannot be read now; the message is short and fit to show to the viewer (no URL, no token)."""


def _utc_naive(value) -> pd.Timestamp | None:
    """A timestamp (ISO text, datetime, Timestamp) as naive UTC; None for a missing value."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or value == "":
        return None
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp


def _naive_datetime(value) -> dt.datetime:
    """A date, datetime or ISO text as a naive UTC datetime (a date as its midnight)."""
    if isinstance(value, str):
        value = pd.Timestamp(value).to_pydatetime()
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    raise ValueError(f"{value!r} is not a date")


@dataclasses.dataclass(frozen=True)
class Filters:
    """What the viewer chose: the period [start, end) in naive UTC and a profile, service and group (or `ALL`)."""

    start: dt.datetime
    end: dt.datetime
    profile: str = ALL
    service: str = ALL
    group: str = ALL

    def __post_init__(self):
        object.__setattr__(self, "start", _naive_datetime(self.start))
        object.__setattr__(self, "end", _naive_datetime(self.end))
        if self.end <= self.start:
            raise ValueError(f"the period's end ({self.end:%Y-%m-%d %H:%M}) must be after its start "
                             f"({self.start:%Y-%m-%d %H:%M})")  # fmt: skip
        for name in ("profile", "service", "group"):
            value = getattr(self, name)
            if not value:
                object.__setattr__(self, name, ALL)
            elif not isinstance(value, str) or len(value) > 200:
                raise ValueError(f"{name} must be a name of at most 200 characters")

    @classmethod
    def default(cls, now: dt.datetime | None = None, days: int = DEFAULT_DAYS) -> Filters:
        """The last `days` whole days up to the end of today (UTC)."""
        now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
        end = dt.datetime(now.year, now.month, now.day) + dt.timedelta(days=1)
        return cls(start=end - dt.timedelta(days=days), end=end)

    @classmethod
    def from_query(cls, query: dict[str, str], now: dt.datetime | None = None) -> Filters:
        """Filters from URL query arguments `start`, `end` (ISO dates or times, UTC), `profile`, `service`, `group`.

        Unknown arguments and unreadable dates raise ValueError with a message naming the argument.
        """
        known = {"start", "end", "profile", "service", "group"}
        unknown = sorted(set(query) - known)
        if unknown:
            raise ValueError(f"unknown filter {unknown[0]!r} (known: {', '.join(sorted(known))})")
        default = cls.default(now)
        values = {}
        for name in ("start", "end"):
            text = query.get(name)
            if text:
                try:
                    values[name] = _utc_naive(text).to_pydatetime()
                except ValueError:
                    raise ValueError(f"{name}: {text[:40]!r} is not an ISO 8601 date or time") from None
            else:
                values[name] = getattr(default, name)
        return cls(**values, **{name: query.get(name) or ALL for name in ("profile", "service", "group")})

    def key(self) -> tuple:
        return (self.start, self.end, self.profile, self.service, self.group)


@runtime_checkable
class Source(Protocol):
    """A kind of record the dashboard reads: `load(filters)` gives its rows as a DataFrame.

    `restricted` is True when the rows identify people (a user column): such a frame reaches only restricted views
    as rows; public views show aggregates computed from it that drop every user name.
    """

    name: str
    title: str
    restricted: bool

    def load(self, filters: Filters) -> pd.DataFrame: ...


# -- hub REST API --------------------------------------------------------------------------------------------------


class HubAPI:
    """The few GET requests the executive sources make to the hub's REST API with the dashboards service's token."""

    def __init__(self, url: str, token: str, timeout: float = HTTP_TIMEOUT_SECONDS):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def get_all(self, path: str, params: dict | None = None) -> list[dict]:
        """Every item of a paginated hub list (`Accept: application/jupyterhub-pagination+json`)."""
        if not self.url:
            raise SourceUnavailable("The hub's REST API is not configured for the dashboards.")
        items: list[dict] = []
        offset = 0
        while True:
            try:
                response = requests.get(
                    f"{self.url}{path}", params={**(params or {}), "offset": offset, "limit": 200},
                    headers={"Authorization": f"token {self.token}",
                             "Accept": "application/jupyterhub-pagination+json"},
                    timeout=self.timeout,
                )  # fmt: skip
            except requests.RequestException:
                raise SourceUnavailable("The hub did not answer; try again in a moment.") from None
            if response.status_code in (401, 403):
                raise SourceUnavailable("The dashboards service may not read the hub's users (check its role).")
            if response.status_code >= 400:
                raise SourceUnavailable(f"The hub answered HTTP {response.status_code}.")
            try:
                body = response.json()
            except ValueError:
                raise SourceUnavailable("The hub's answer was not JSON (is hub_api_url the hub's /hub/api?).") from None
            if isinstance(body, list):  # a hub without pagination support
                return body
            page = body.get("items", [])
            items.extend(page)
            following = (body.get("_pagination") or {}).get("next")
            if not following or not page:
                return items
            offset = following.get("offset", offset + len(page))


def _groups_text(groups) -> str:
    return ",".join(sorted(groups or []))


class _HubSource:
    restricted = True
    #: Read with the dashboards service's own hub token: the same frame for every viewer (shared cache entry).
    shared = True

    def __init__(self, context):
        self.api = HubAPI(context.hub_api_url, context.hub_api_token)

    def _users(self) -> list[dict]:
        return self.api.get_all("/users", {"include_stopped_servers": "1"})


class HubUsers(_HubSource):
    """Registered users: `user`, `groups` (comma-separated), `admin`, `created`, `last_activity`, `servers_running`.

    All users registered by the period's end (the group filter keeps its members); `last_activity` tells who was
    active in the period.
    """

    name = "hub_users"
    title = "Registered users (hub)"

    def load(self, filters: Filters) -> pd.DataFrame:
        return users_frame(self._users(), filters)


class HubServers(_HubSource):
    """Servers: `user`, `server`, `profile`, `state` (running, pending, stopped), `started`, `last_activity`."""

    name = "hub_servers"
    title = "Servers (hub)"

    def load(self, filters: Filters) -> pd.DataFrame:
        return servers_frame(self._users(), filters)


class HubGroups(_HubSource):
    """Group membership: one row per (`group`, `user`)."""

    name = "hub_groups"
    title = "Groups (hub)"

    def load(self, filters: Filters) -> pd.DataFrame:
        return groups_frame(self.api.get_all("/groups"), filters)


USER_COLUMNS = ["user", "groups", "admin", "created", "last_activity", "servers_running"]
SERVER_COLUMNS = ["user", "server", "profile", "state", "started", "last_activity"]


def users_frame(users: list[dict], filters: Filters) -> pd.DataFrame:
    """The hub's user models as rows (registered by the period's end, in the filter's group)."""
    rows = []
    for model in users:
        created = _utc_naive(model.get("created"))
        if created is not None and created >= pd.Timestamp(filters.end):
            continue
        groups = model.get("groups") or []
        if filters.group != ALL and filters.group not in groups:
            continue
        servers = (model.get("servers") or {}).values()
        rows.append({
            "user": model["name"], "groups": _groups_text(groups), "admin": bool(model.get("admin")),
            "created": created, "last_activity": _utc_naive(model.get("last_activity")),
            "servers_running": sum(1 for server in servers if server.get("ready")),
        })  # fmt: skip
    frame = pd.DataFrame(rows, columns=USER_COLUMNS)
    for column in ("created", "last_activity"):
        frame[column] = pd.to_datetime(frame[column])
    return frame


def servers_frame(users: list[dict], filters: Filters) -> pd.DataFrame:
    """Every server of every user (in the filter's group, of the filter's profile) as rows.

    Stopped servers without recorded options are left out: the hub lists every user's default server, also one that
    never ran.
    """
    rows = []
    for model in users:
        if filters.group != ALL and filters.group not in (model.get("groups") or []):
            continue
        for name, server in (model.get("servers") or {}).items():
            options = server.get("user_options") or {}
            state = "running" if server.get("ready") else "pending" if server.get("pending") else "stopped"
            if state == "stopped" and not options:
                continue  # the hub lists every user's default server, also one never started
            profile = options.get("profile") or "(none)"
            if filters.profile != ALL and profile != filters.profile:
                continue
            rows.append({"user": model["name"], "server": name or "", "profile": profile, "state": state,
                         "started": _utc_naive(server.get("started")),
                         "last_activity": _utc_naive(server.get("last_activity"))})  # fmt: skip
    frame = pd.DataFrame(rows, columns=SERVER_COLUMNS)
    for column in ("started", "last_activity"):
        frame[column] = pd.to_datetime(frame[column])
    return frame


def groups_frame(groups: list[dict], filters: Filters) -> pd.DataFrame:
    rows = [{"group": group["name"], "user": user} for group in groups for user in group.get("users") or []
            if filters.group in (ALL, group["name"])]  # fmt: skip
    return pd.DataFrame(rows, columns=["group", "user"])


# -- accounting ----------------------------------------------------------------------------------------------------

DEBIT_COLUMNS = ["user", "service", "profile", "session", "amount", "time", "period_start", "period_end", "day"]
PAGE = 1000


def _statistics_token(context) -> Callable[[], str] | None:
    """The token that reads platform-wide statistics: the service's statistics account if the context carries one
    (the same for every viewer), else the viewer's own."""
    return getattr(context, "statistics_token", None) or context.user_token


class AccountingUsage:
    """Every debit in the period: `user`, `service`, `profile`, `session`, `amount` (DCU), `time`, `day`, ...

    `time` is the start of the period a debit covers (its recording time when it gives none); `day` its date.
    """

    name = "dcu_debits"
    title = "DCU consumption (accounting)"
    restricted = True

    def __init__(self, context, client=None):
        from desp_lab.accounting import Accounting

        token = _statistics_token(context)
        self.available = bool(context.accounting_url) and token is not None
        #: Read as the service's statistics account: the same frame for every viewer (shared cache entry).
        self.shared = getattr(context, "statistics_token", None) is not None
        self.client = client or (Accounting(context.accounting_url, token=token, retries=1)
                                 if self.available else None)  # fmt: skip

    def load(self, filters: Filters) -> pd.DataFrame:
        if self.client is None:
            raise SourceUnavailable("DCU statistics need the accounting service and a signed-in viewer.")
        from desp_lab.errors import DespError

        from desp_dashboards.service_account import ServiceAccountUnavailable

        period = {"start": filters.start, "end": filters.end}
        narrowing = {name: getattr(filters, name) for name in ("service", "profile") if getattr(filters, name) != ALL}
        try:
            report = self.client.usage(group_by="user", **period, **narrowing)
            if report.get("user") is not None:
                raise SourceUnavailable("Platform-wide DCU statistics need the executive-statistics role.")
            rows = []
            for user in sorted(row["user"] for row in report["rows"]):
                rows.extend(self._debits(user, period, filters))
        except SourceUnavailable:
            raise
        except ServiceAccountUnavailable as error:
            raise SourceUnavailable(f"DCU statistics are unavailable now: {error}.") from None
        except DespError as error:
            if getattr(error, "status", None) in (401, 403):
                raise SourceUnavailable("Platform-wide DCU statistics need the executive-statistics role.") from None
            raise SourceUnavailable("The accounting service could not be read; try again in a moment.") from None
        return debits_frame(rows)

    def _debits(self, user: str, period: dict, filters: Filters) -> list[dict]:
        found, offset = [], 0
        service = {"service": filters.service} if filters.service != ALL else {}
        while True:
            page = self.client.transactions(user, **period, **service, limit=PAGE, offset=offset)
            for entry in page["transactions"]:
                if entry["kind"] == "debit" and filters.profile in (ALL, entry.get("profile")):
                    found.append(entry)
            offset += len(page["transactions"])
            if not page["transactions"] or offset >= page["count"]:
                return found


def debits_frame(transactions: list[dict]) -> pd.DataFrame:
    """Debit transactions (accounting API dicts) as rows; amounts as float DCU, times as naive UTC."""
    rows = []
    for entry in transactions:
        start = _utc_naive(entry.get("period_start"))
        created = _utc_naive(entry.get("created"))
        moment = start if start is not None else created
        rows.append({
            "user": entry["user"], "service": entry["service"], "profile": entry.get("profile") or "(none)",
            "session": entry.get("session") or "", "amount": float(entry["amount"]), "time": moment,
            "period_start": start, "period_end": _utc_naive(entry.get("period_end")) or moment,
            "day": moment.normalize() if moment is not None else None,
        })  # fmt: skip
    frame = pd.DataFrame(rows, columns=DEBIT_COLUMNS)
    for column in ("time", "period_start", "period_end", "day"):
        frame[column] = pd.to_datetime(frame[column])
    frame["amount"] = frame["amount"].astype(float)
    return frame


RUN_COLUMNS = ["who", "what", "start", "end", "status", "service", "session"]


class Sessions:
    """Runs: one row per metered session (`who`, `what` = profile, `start`, `end`, `status`, `service`, `session`).

    Built from the debits' `session` and covered periods; a run's status is "metered" here (the store marks the
    runs whose hub server is still up as "running").
    """

    name = "runs"
    title = "Runs (metered sessions)"
    restricted = True
    shared = False  # the store marks it shared when its debits are

    def __init__(self, context, debits: Callable[[Filters], pd.DataFrame] | None = None):
        #: Where the debits come from: by default an `AccountingUsage` of the context; the store passes its cached
        #: loader so the ledger is read once for both sources.
        self.debits = debits or AccountingUsage(context).load

    def load(self, filters: Filters) -> pd.DataFrame:
        return runs_frame(self.debits(filters))


def runs_frame(debits: pd.DataFrame) -> pd.DataFrame:
    """Runs from debit rows: sessions with an id, from their first covered instant to their last."""
    with_session = debits[debits["session"] != ""]
    if with_session.empty:
        empty = pd.DataFrame(columns=RUN_COLUMNS)
        return empty.astype({"start": "datetime64[ns]", "end": "datetime64[ns]"})
    grouped = with_session.groupby(["session", "user", "service", "profile"], as_index=False).agg(
        start=("period_start", "min"), end=("period_end", "max"), first=("time", "min"))
    grouped["start"] = grouped["start"].fillna(grouped["first"])
    runs = pd.DataFrame({"who": grouped["user"], "what": grouped["profile"], "start": grouped["start"],
                         "end": grouped["end"], "status": "metered", "service": grouped["service"],
                         "session": grouped["session"]})  # fmt: skip
    return runs.sort_values(["start", "session"]).reset_index(drop=True)[RUN_COLUMNS]


# -- catalogue -----------------------------------------------------------------------------------------------------

COLLECTION_COLUMNS = ["collection", "title", "west", "south", "east", "north", "start", "end"]


class CatalogueCollections:
    """The catalogue's collections with their spatial extent (first bbox) and temporal extent."""

    name = "collections"
    title = "Catalogue collections"
    restricted = False
    shared = False  # read with the viewer's own token

    def __init__(self, context):
        self.url = context.catalogue_url
        self.token = context.user_token

    def load(self, filters: Filters) -> pd.DataFrame:
        if not self.url or self.token is None:
            raise SourceUnavailable("The catalogue is not reachable from this page (sign in to see its collections).")
        from desp_lab.catalogue import Catalogue
        from desp_lab.errors import DespError

        try:
            collections = Catalogue(self.url, token=self.token).collections()
        except DespError:
            raise SourceUnavailable("The catalogue could not be read; try again in a moment.") from None
        rows = []
        for collection in collections:
            bbox = (collection.extent.spatial.bboxes or [[-180, -90, 180, 90]])[0]
            interval = (collection.extent.temporal.intervals or [[None, None]])[0]
            rows.append({"collection": collection.id, "title": collection.title or collection.id,
                         "west": bbox[0], "south": bbox[1], "east": bbox[2], "north": bbox[3],
                         "start": _utc_naive(interval[0]), "end": _utc_naive(interval[1])})  # fmt: skip
        frame = pd.DataFrame(rows, columns=COLLECTION_COLUMNS)
        for column in ("start", "end"):
            frame[column] = pd.to_datetime(frame[column])
        return frame


#: The registered sources, in display order: `factory(context) -> Source`.
SOURCES: list[Callable] = [HubUsers, HubServers, HubGroups, AccountingUsage, Sessions, CatalogueCollections]


# -- cached loading ------------------------------------------------------------------------------------------------

CACHE_TTL_SECONDS = 60.0
CACHE_MAX_ENTRIES = 256
_cache: dict[tuple, tuple[float, pd.DataFrame]] = {}
_cache_lock = threading.Lock()


def cached_load(source, filters: Filters, viewer: tuple, ttl: float = CACHE_TTL_SECONDS) -> pd.DataFrame:
    """`source.load(filters)`, reused for `ttl` seconds by sessions with the same `viewer` key (shared by sessions).

    The key holds the source's name, the viewer (who reads, with which endpoints; for a source read with the
    service's own credentials, the same for every viewer: see `ExecutiveStore._viewer`) and the filters, so a frame
    read with one viewer's token never answers another's request. A copy is returned, so callers may change it.
    """
    key = (source.name, viewer, filters.key())
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None and now - hit[0] < ttl:
        return hit[1].copy()
    frame = source.load(filters)
    with _cache_lock:
        if len(_cache) >= CACHE_MAX_ENTRIES:
            for stale in sorted(_cache, key=lambda k: _cache[k][0])[: CACHE_MAX_ENTRIES // 4]:
                del _cache[stale]
        _cache[key] = (now, frame)
    return frame.copy()


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()
