"""The executive dashboard's data store: filters as parameters, cached source frames, pure pandas aggregations.

`ExecutiveStore(context, filters=None)` holds the viewer's filters (time range, profile, service, group) as params,
loads each registered source once per filter set (`sources.cached_load`, shared by sessions of the same viewer for a
minute) and hands frames to the aggregation functions below. Those functions take and return DataFrames only (no
I/O, no Panel), so they are tested alone.

Public and restricted: a function whose name starts with `public_` or that the views mark public returns aggregates
only: counts and sums per day, profile, service or group, never a user name, a session id or a server name (a
group with one member is still only a count). Per-user rows come only from the `restricted_*` functions, which the
views build only for members of the restricted group.
"""

from __future__ import annotations

import pandas as pd
import param

from .sources import ALL, SOURCES, Filters, Sessions, SourceUnavailable, cached_load

NO_GROUP = "(no group)"

# -- filtering -----------------------------------------------------------------------------------------------------


def members(groups: pd.DataFrame, group: str) -> set[str] | None:
    """The users of `group` (None for ALL: no restriction)."""
    if group == ALL:
        return None
    return set(groups.loc[groups["group"] == group, "user"])


def filter_rows(frame: pd.DataFrame, filters: Filters, time_column: str | None, users: set[str] | None = None,
                profile_column: str | None = "profile", service_column: str | None = "service",
                user_column: str = "user") -> pd.DataFrame:  # fmt: skip
    """Rows of `frame` in the filters' period (on `time_column`), profile, service and among `users`."""
    keep = pd.Series(True, index=frame.index)
    if time_column is not None:
        keep &= (frame[time_column] >= pd.Timestamp(filters.start)) & (frame[time_column] < pd.Timestamp(filters.end))
    if profile_column is not None and filters.profile != ALL:
        keep &= frame[profile_column] == filters.profile
    if service_column is not None and filters.service != ALL:
        keep &= frame[service_column] == filters.service
    if users is not None:
        keep &= frame[user_column].isin(users)
    return frame[keep].reset_index(drop=True)


def days(filters: Filters) -> pd.DatetimeIndex:
    """Every day of the period (so days without activity show as zero)."""
    last = pd.Timestamp(filters.end) - pd.Timedelta(microseconds=1)
    return pd.date_range(pd.Timestamp(filters.start).normalize(), last.normalize(), freq="D", name="day")


def _per_day(frame: pd.DataFrame, day_column: str, value: str, filters: Filters, by: str | None = None,
             how: str = "count", source: str | None = None) -> pd.DataFrame:  # fmt: skip
    """Rows (or the sum of `source`) per day of the period, optionally per `by`; zero-filled."""
    work = frame.assign(day=frame[day_column].dt.normalize())
    keys = ["day", by] if by else ["day"]
    if how == "count":
        counted = work.groupby(keys).size()
    elif how == "nunique":
        counted = work.groupby(keys)[source].nunique()
    else:
        counted = work.groupby(keys)[source].sum()
    counted = counted.rename(value)
    if by:
        categories = sorted(work[by].dropna().unique()) or []
        index = pd.MultiIndex.from_product([days(filters), categories], names=keys)
    else:
        index = days(filters)
    result = counted.reindex(index, fill_value=0).reset_index()
    result[value] = result[value].astype(float if how == "sum" else int)
    return result


# -- public aggregations (no user names) -----------------------------------------------------------------------------


def summary(users: pd.DataFrame, servers: pd.DataFrame, debits: pd.DataFrame | None, runs: pd.DataFrame | None,
            filters: Filters) -> pd.DataFrame:  # fmt: skip
    """Headline numbers: registered users, users active in the period, running servers, runs started, DCU used."""
    start, end = pd.Timestamp(filters.start), pd.Timestamp(filters.end)
    active = users[(users["last_activity"] >= start) & (users["last_activity"] < end)]
    rows = [
        ("Registered users", len(users)),
        ("Users active in the period (last activity)", len(active)),
        ("Running servers", int((servers["state"] == "running").sum())),
    ]
    if runs is not None:
        started = (runs["start"] >= start) & (runs["start"] < end)
        rows.append(("Server runs started in the period", int(started.sum())))
    if debits is not None:
        rows.append(("DCU consumed in the period", round(float(debits["amount"].sum()), 3)))
    return pd.DataFrame(rows, columns=["statistic", "value"])


def registrations_per_day(users: pd.DataFrame, filters: Filters) -> pd.DataFrame:
    """New users per day of the period and the number registered by the end of each day.

    SourceUnavailable when the hub gave no registration date at all (its `created` field needs the `read:users`
    scope): zeros would be wrong.
    """
    if len(users) and users["created"].isna().all():
        raise SourceUnavailable("Registration dates are not readable: the dashboards service's hub role lacks "
                                "the read:users scope.")  # fmt: skip
    known = users.dropna(subset=["created"])
    per_day = _per_day(filter_rows(known, filters, "created", profile_column=None, service_column=None),
                       "created", "new_users", filters)  # fmt: skip
    before = int((known["created"] < pd.Timestamp(filters.start)).sum())
    per_day["registered"] = before + per_day["new_users"].cumsum()
    return per_day


def active_users_per_day(users: pd.DataFrame, filters: Filters) -> pd.DataFrame:
    """Users per day of their last activity (the hub keeps only the last one, so a user counts once)."""
    known = users.dropna(subset=["last_activity"])
    inside = filter_rows(known, filters, "last_activity", profile_column=None, service_column=None)
    return _per_day(inside, "last_activity", "users", filters)


def users_per_group(groups: pd.DataFrame) -> pd.DataFrame:
    """Members per hub group, largest first."""
    counted = groups.groupby("group")["user"].nunique().rename("users").reset_index()
    return counted.sort_values(["users", "group"], ascending=[False, True]).reset_index(drop=True)


def servers_by_profile(servers: pd.DataFrame, state: str = "running") -> pd.DataFrame:
    """Servers in `state` per profile, largest first."""
    chosen = servers[servers["state"] == state]
    counted = chosen.groupby("profile").size().rename("servers").reset_index()
    return counted.sort_values(["servers", "profile"], ascending=[False, True]).reset_index(drop=True)


def dcu_by(debits: pd.DataFrame, column: str) -> pd.DataFrame:
    """DCU consumed and number of debits per `column` (profile or service), largest first."""
    grouped = debits.groupby(column).agg(dcu=("amount", "sum"), debits=("amount", "size")).reset_index()
    grouped["dcu"] = grouped["dcu"].round(3)
    return grouped.sort_values(["dcu", column], ascending=[False, True]).reset_index(drop=True)


def dcu_by_service_and_profile(debits: pd.DataFrame) -> pd.DataFrame:
    """DCU, debits and runs (distinct sessions) per service and profile, largest first: the public usage table."""
    grouped = debits.groupby(["service", "profile"]).agg(
        dcu=("amount", "sum"), debits=("amount", "size"), runs=("session", lambda s: s[s != ""].nunique()))
    grouped = grouped.reset_index()
    grouped["dcu"] = grouped["dcu"].round(3)
    return grouped.sort_values(["dcu", "service", "profile"], ascending=[False, True, True]).reset_index(drop=True)


def with_groups(debits: pd.DataFrame, groups: pd.DataFrame) -> pd.DataFrame:
    """Debits with the consuming user's hub `group`: one row per group (NO_GROUP for a user in none)."""
    membership = groups[["user", "group"]].drop_duplicates()
    joined = debits.merge(membership, on="user", how="left")
    joined["group"] = joined["group"].fillna(NO_GROUP)
    return joined


def dcu_by_group(debits: pd.DataFrame, groups: pd.DataFrame) -> pd.DataFrame:
    """DCU per hub group of the consuming user; a user in several groups counts in each, one in none in NO_GROUP."""
    joined = with_groups(debits[["user", "amount"]], groups)
    grouped = joined.groupby("group").agg(dcu=("amount", "sum"), users=("user", "nunique")).reset_index()
    grouped["dcu"] = grouped["dcu"].round(3)
    return grouped.sort_values(["dcu", "group"], ascending=[False, True]).reset_index(drop=True)


def dcu_per_day(debits: pd.DataFrame, filters: Filters, by: str = "profile") -> pd.DataFrame:
    """DCU per day of use and per `by` (profile or service), zero-filled over the period."""
    inside = filter_rows(debits.dropna(subset=["time"]), filters, "time")
    result = _per_day(inside, "time", "dcu", filters, by=by, how="sum", source="amount")
    result["dcu"] = result["dcu"].round(3)
    return result


def dcu_per_day_by_group(debits: pd.DataFrame, groups: pd.DataFrame, filters: Filters) -> pd.DataFrame:
    """DCU per day of use and per hub group of the consuming user (a user in several groups counts in each)."""
    inside = filter_rows(debits.dropna(subset=["time"]), filters, "time")
    result = _per_day(with_groups(inside, groups), "time", "dcu", filters, by="group", how="sum", source="amount")
    result["dcu"] = result["dcu"].round(3)
    return result


def spawns_per_day(runs: pd.DataFrame, filters: Filters) -> pd.DataFrame:
    """Server runs started per day and profile."""
    inside = filter_rows(runs, filters, "start", profile_column="what", user_column="who")
    return _per_day(inside.rename(columns={"what": "profile"}), "start", "spawns", filters, by="profile")


def run_durations(runs: pd.DataFrame) -> pd.DataFrame:
    """Each run's duration in hours and its profile (no user, no session): the histogram's data."""
    hours = (runs["end"] - runs["start"]).dt.total_seconds() / 3600.0
    return pd.DataFrame({"profile": runs["what"], "hours": hours.round(4)}).reset_index(drop=True)


def public_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs for the public Gantt: lane = profile, numbered per profile, start, end, status (no user, no session)."""
    ordered = runs.sort_values(["what", "start"]).reset_index(drop=True)
    number = ordered.groupby("what").cumcount() + 1
    return pd.DataFrame({"lane": ordered["what"], "run": number, "start": ordered["start"], "end": ordered["end"],
                         "status": ordered["status"]})  # fmt: skip


def mark_running(runs: pd.DataFrame, servers: pd.DataFrame) -> pd.DataFrame:
    """Runs whose hub server (`{user}/{server}/{started}` of the session) is running now get status "running"."""
    running = servers[servers["state"] == "running"].dropna(subset=["started"])
    live = {(row.user, row.server, row.started.floor("s")) for row in running.itertuples()}
    marked = runs.copy()

    def status(row):
        parts = str(row["session"]).rsplit("/", 1)
        if len(parts) == 2 and "/" in parts[0]:
            user, server = parts[0].split("/", 1)
            try:
                started = pd.Timestamp(parts[1]).tz_convert("UTC").tz_localize(None)
            except (ValueError, TypeError):
                return row["status"]
            if (user, server, started) in live:
                return "running"
        return row["status"]

    if not marked.empty:
        marked["status"] = marked.apply(status, axis=1)
    return marked


# -- restricted (per-user rows) ------------------------------------------------------------------------------------


def restricted_dcu_by_user(debits: pd.DataFrame) -> pd.DataFrame:
    """DCU, debits and sessions per user, largest first."""
    grouped = debits.groupby("user").agg(dcu=("amount", "sum"), debits=("amount", "size"),
                                         sessions=("session", lambda s: s[s != ""].nunique()))
    grouped = grouped.reset_index()
    grouped["dcu"] = grouped["dcu"].round(3)
    return grouped.sort_values(["dcu", "user"], ascending=[False, True]).reset_index(drop=True)


# -- the store -----------------------------------------------------------------------------------------------------


class ExecutiveStore(param.Parameterized):
    """The viewer's filters and the frames of the registered sources, loaded lazily and cached.

    Built without I/O; the first `frame(...)` reads the source. `options()` reads what the filter menus offer.
    """

    start = param.Date(doc="First day of the period (UTC).")
    end = param.Date(doc="Day after the period's last day (UTC, exclusive).")
    profile = param.Selector(default=ALL, objects=[ALL], check_on_set=False, doc="Only this server profile.")
    service = param.Selector(default=ALL, objects=[ALL], check_on_set=False, doc="Only this consuming service.")
    group = param.Selector(default=ALL, objects=[ALL], check_on_set=False, doc="Only users of this hub group.")

    def __init__(self, context, filters: Filters | None = None, sources: list | None = None, **params):
        """`sources`: the Source objects to read (default: one of each registered in `sources.SOURCES`)."""
        filters = filters or Filters.default()
        super().__init__(start=filters.start, end=filters.end, profile=filters.profile, service=filters.service,
                         group=filters.group, **params)  # fmt: skip
        self.context = context
        if sources is None:
            sources = [factory(context) for factory in SOURCES]
        self._sources = {source.name: source for source in sources}
        runs = self._sources.get(Sessions.name)
        if isinstance(runs, Sessions):
            runs.debits = lambda chosen: self.frame("dcu_debits", chosen)
            runs.shared = bool(getattr(self._sources.get("dcu_debits"), "shared", False))

    @property
    def filters(self) -> Filters:
        return Filters(self.start, self.end, self.profile, self.service, self.group)

    def source(self, name: str):
        return self._sources[name]

    @property
    def source_names(self) -> list[str]:
        return list(self._sources)

    def _viewer(self, source) -> tuple:
        """The cache key's reader: the viewer, or "service" for a source read with the service's own credentials
        (hub token, statistics account), whose frame is the same for everyone and so is shared by all sessions."""
        context = self.context
        reader = "service" if getattr(source, "shared", False) else context.user
        return (reader, context.hub_api_url, context.accounting_url, context.catalogue_url)

    def frame(self, name: str, filters: Filters | None = None) -> pd.DataFrame:
        """The source `name`'s frame for `filters` (default: the store's), cached for a minute."""
        source = self._sources[name]
        return cached_load(source, filters or self.filters, self._viewer(source))

    def try_frame(self, name: str) -> pd.DataFrame | None:
        """The frame, or None when the source is unavailable (its panels then say why)."""
        try:
            return self.frame(name)
        except SourceUnavailable:
            return None

    # The frames the views aggregate, with every filter applied.

    def users(self) -> pd.DataFrame:
        return self.frame("hub_users")

    def servers(self) -> pd.DataFrame:
        return self.frame("hub_servers")

    def groups(self) -> pd.DataFrame:
        return self.frame("hub_groups")

    def debits(self) -> pd.DataFrame:
        filters = self.filters
        users = members(self.frame("hub_groups"), filters.group) if filters.group != ALL else None
        return filter_rows(self.frame("dcu_debits"), filters, None, users=users)

    def runs(self) -> pd.DataFrame:
        filters = self.filters
        users = members(self.frame("hub_groups"), filters.group) if filters.group != ALL else None
        runs = filter_rows(self.frame("runs"), filters, None, users=users, profile_column="what", user_column="who")
        try:
            servers = self.frame("hub_servers", Filters(filters.start, filters.end))
        except SourceUnavailable:
            return runs
        return mark_running(runs, servers)

    def options(self) -> dict[str, list[str]]:
        """Profiles, services and groups known to the sources (for the filter menus); unavailable sources skipped."""
        unfiltered = Filters(self.start, self.end)
        found = {"profile": set(), "service": set(), "group": set()}
        for name, columns in (("hub_servers", {"profile": "profile"}), ("hub_groups", {"group": "group"}),
                              ("dcu_debits", {"profile": "profile", "service": "service"})):  # fmt: skip
            try:
                frame = self.frame(name, unfiltered)
            except SourceUnavailable:
                continue
            for option, column in columns.items():
                found[option].update(str(value) for value in frame[column].dropna().unique())
        return {option: [ALL, *sorted(values)] for option, values in found.items()}

    def refresh_options(self) -> None:
        """Offer the known profiles, services and groups in the filter menus (reads the sources)."""
        for option, values in self.options().items():
            current = getattr(self, option)
            self.param[option].objects = values if current in values else [*values, current]
