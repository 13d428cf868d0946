"""The executive dashboard's views: one `ViewSpec` per panel (data function, chart kind, public or restricted).

`VIEWS` lists them in display order. Each spec's `data(store)` returns the DataFrame the panel shows, which is also
what its CSV and XLSX buttons and the data endpoints (`view_data`) export. A new source's numbers are one more spec
here. Restricted specs are built only for members of the restricted group, and `view_data` refuses them to anyone
else (PermissionError), so the public never receives per-user rows.

Chart kinds: `numbers` (headline indicators), `bar`, `stacked` (bars per day stacked by a category), `curve`, `hist`,
`pie`, `map`, `table`, `gantt`. Charts are HoloViews/hvPlot on bokeh, except the pie and the Gantt, drawn with bokeh
directly (hvPlot has neither).

The map shows the catalogue collections' spatial extents (their STAC bounding boxes) over the shipped Natural Earth
coastline: where the platform's data is. It does not show where users are: the platform records no user location.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
from collections.abc import Callable

import holoviews as hv
import numpy as np
import hvplot.pandas  # noqa: F401  (registers DataFrame.hvplot)
import pandas as pd
import panel as pn
import param

from . import exports
from . import store as agg
from .sources import Filters, SourceUnavailable
from .store import ExecutiveStore

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")  # fmt: skip
MAX_GANTT_ROWS = 300


@dataclasses.dataclass(frozen=True)
class ViewSpec:
    """One panel: its `name` (also the data endpoint's and the download's file name), title, description, chart
    kind and options, whether it is restricted, and `data(store) -> DataFrame`."""

    name: str
    title: str
    kind: str
    data: Callable[[ExecutiveStore], pd.DataFrame]
    description: str = ""
    restricted: bool = False
    x: str | None = None
    y: str | None = None
    by: str | None = None


def _debits_by(column):
    return lambda store: agg.dcu_by(store.debits(), column)


def _summary(store: ExecutiveStore) -> pd.DataFrame:
    return agg.summary(store.users(), store.servers(), _optional(store.debits), _optional(store.runs), store.filters)


def _optional(load):
    """`load()`, or None when its source is unavailable (the summary then leaves that number out)."""
    try:
        return load()
    except SourceUnavailable:
        return None


def _restricted_users(store: ExecutiveStore) -> pd.DataFrame:
    return store.users().sort_values("user").reset_index(drop=True)


def _restricted_servers(store: ExecutiveStore) -> pd.DataFrame:
    servers = store.servers()
    return servers.sort_values(["state", "user", "server"]).reset_index(drop=True)


def _restricted_runs(store: ExecutiveStore) -> pd.DataFrame:
    return store.runs().sort_values(["start", "who"]).reset_index(drop=True)


VIEWS: list[ViewSpec] = [
    ViewSpec("summary", "At a glance", "numbers", _summary,
             "Registered users, users whose last activity falls in the period, servers running now, server runs "
             "started and DCU consumed in the period.", x="statistic", y="value"),
    ViewSpec("registrations", "Registered users", "curve", lambda s: agg.registrations_per_day(s.users(), s.filters),
             "Users registered by the end of each day, and new users per day.", x="day", y="registered"),
    ViewSpec("active_users", "Users by day of last activity", "bar",
             lambda s: agg.active_users_per_day(s.users(), s.filters),
             "The hub keeps only each user's latest activity, so a user counts once, on that day. Logins per day "
             "are not recorded yet.", x="day", y="users"),
    ViewSpec("users_per_group", "Users per group", "bar", lambda s: agg.users_per_group(s.groups()),
             "Members of each hub group.", x="group", y="users"),
    ViewSpec("running_servers_by_profile", "Running servers by profile", "pie",
             lambda s: agg.servers_by_profile(s.servers()), "Servers running now, per profile.", x="profile",
             y="servers"),
    ViewSpec("spawns_per_day", "Server runs started per day", "stacked",
             lambda s: agg.spawns_per_day(s.runs(), s.filters),
             "Metered server runs by the day they started, stacked by profile.", x="day", y="spawns", by="profile"),
    ViewSpec("dcu_per_day", "DCU per day", "curve", lambda s: agg.dcu_per_day(s.debits(), s.filters),
             "DCU consumed per day of use, per profile.", x="day", y="dcu", by="profile"),
    ViewSpec("dcu_by_profile", "DCU by profile", "bar", _debits_by("profile"),
             "DCU consumed in the period per profile.", x="profile", y="dcu"),
    ViewSpec("dcu_by_service", "DCU by service", "pie", _debits_by("service"),
             "DCU consumed in the period per service.", x="service", y="dcu"),
    ViewSpec("dcu_by_group", "DCU by user group", "bar", lambda s: agg.dcu_by_group(s.debits(), s.groups()),
             "DCU consumed per hub group of the consuming user (a user in several groups counts in each).",
             x="group", y="dcu"),
    ViewSpec("dcu_per_day_by_group", "DCU per day by user group", "curve",
             lambda s: agg.dcu_per_day_by_group(s.debits(), s.groups(), s.filters),
             "DCU consumed per day of use, per hub group of the consuming user (a user in several groups counts in "
             "each).", x="day", y="dcu", by="group"),
    ViewSpec("usage_table", "DCU by service and profile", "table",
             lambda s: agg.dcu_by_service_and_profile(s.debits()),
             "DCU consumed, debits and runs per service and profile in the period."),
    ViewSpec("run_durations", "Run durations", "hist", lambda s: agg.run_durations(s.runs()),
             "How long metered server runs lasted, in hours.", x="hours"),
    ViewSpec("runs_by_profile", "Runs (Gantt, by profile)", "gantt", lambda s: agg.public_runs(s.runs()),
             "Each metered run from start to end, numbered per profile; workflow runs join here once recorded.",
             x="lane"),
    ViewSpec("collections_map", "Where the data is", "map", lambda s: s.frame("collections"),
             "The catalogue collections' spatial extents (STAC bounding boxes). Not where users are: the platform "
             "records no user location.", x="collection"),
    ViewSpec("users", "Users", "table", _restricted_users,
             "Every registered user with groups, registration and last activity.", restricted=True),
    ViewSpec("servers", "Servers", "table", _restricted_servers, "Every server with its profile and state.",
             restricted=True),
    ViewSpec("dcu_by_user", "DCU by user", "table", lambda s: agg.restricted_dcu_by_user(s.debits()),
             "DCU, debits and sessions per user in the period.", restricted=True),
    ViewSpec("runs", "Runs (Gantt, by user)", "gantt", _restricted_runs,
             "Each metered run by user: who, what (profile), start, end, status.", restricted=True, x="who"),
]
VIEWS_BY_NAME = {spec.name: spec for spec in VIEWS}


def views_for(context) -> list[ViewSpec]:
    """The specs this viewer may see: all for members of the restricted group, the public ones otherwise."""
    return [spec for spec in VIEWS if not spec.restricted or context.may_see_restricted]


def view_data(name: str, context, filters: Filters | None = None) -> pd.DataFrame:
    """The frame of view `name` for this viewer and filters (what the data endpoints send as JSON or CSV).

    KeyError for an unknown view; PermissionError for a restricted view and a viewer outside the restricted
    group; `SourceUnavailable` (short message for the viewer) when a source cannot be read.
    """
    spec = VIEWS_BY_NAME[name]
    if spec.restricted and not context.may_see_restricted:
        raise PermissionError(f"The view {name!r} is restricted to the {context.restricted_group!r} group.")
    return spec.data(ExecutiveStore(context, filters))


# -- charts --------------------------------------------------------------------------------------------------------


def _day_labels(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    out = frame.copy()
    out[column] = out[column].dt.strftime("%Y-%m-%d")
    return out


def _colours(values) -> list[str]:
    return [PALETTE[index % len(PALETTE)] for index in range(len(values))]


def pie_figure(frame: pd.DataFrame, label: str, value: str, title: str = ""):
    """A bokeh pie (wedges with a legend and hover) of `value` per `label`."""
    from bokeh.plotting import figure
    from bokeh.transform import cumsum

    data = frame[[label, value]].copy()
    total = float(data[value].sum()) or 1.0
    data["angle"] = data[value].astype(float) / total * 2 * math.pi
    data["share"] = (data[value].astype(float) / total * 100).round(1)
    data["colour"] = _colours(data.index)
    data["label"] = data[label].astype(str)
    plot = figure(height=300, sizing_mode="stretch_width", title=title, toolbar_location=None,
                  tools="hover", tooltips=f"@label: @{{{value}}} (@share%)", x_range=(-1.1, 1.6))  # fmt: skip
    plot.wedge(x=0, y=0, radius=1.0, start_angle=cumsum("angle", include_zero=True), end_angle=cumsum("angle"),
               line_color="white", fill_color="colour", legend_field="label", source=data)  # fmt: skip
    plot.axis.visible = False
    plot.grid.grid_line_color = None
    return plot


def gantt_figure(frame: pd.DataFrame, lane: str, title: str = ""):
    """A bokeh Gantt: one horizontal bar per row from `start` to `end` on the row's `lane` (coloured by status)."""
    from bokeh.models import ColumnDataSource
    from bokeh.plotting import figure

    data = frame.head(MAX_GANTT_ROWS).copy()
    if "run" in data.columns:  # public runs: one lane per run, named by profile and number
        data["lane_label"] = data[lane].astype(str) + " #" + data["run"].astype(str)
    else:
        data["lane_label"] = data[lane].astype(str)
    statuses = sorted(data["status"].astype(str).unique())
    data["colour"] = data["status"].astype(str).map(dict(zip(statuses, _colours(statuses), strict=True)))
    lanes = list(dict.fromkeys(data["lane_label"]))[::-1]
    plot = figure(y_range=lanes or [""], x_axis_type="datetime", height=max(200, 24 * len(lanes) + 80),
                  sizing_mode="stretch_width", title=title, tools="xpan,xwheel_zoom,reset,hover",
                  tooltips=[("", "@lane_label"), ("start", "@start{%F %T}"), ("end", "@end{%F %T}"),
                            ("status", "@status")])  # fmt: skip
    plot.hover.formatters = {"@start": "datetime", "@end": "datetime"}
    plot.hbar(y="lane_label", left="start", right="end", height=0.6, fill_color="colour", line_color=None,
              legend_field="status", source=ColumnDataSource(data))  # fmt: skip
    return plot


@functools.cache
def _coastline() -> np.ndarray:
    """The shipped Natural Earth coastline as one (lon, lat) array, parts separated by NaN rows (read once)."""
    from cartopy.io import shapereader

    from desp_dashboards.natural_earth import shapefile_path

    path = shapefile_path("physical", "coastline")
    if not path.exists():
        return np.empty((0, 2))
    parts = []
    for geometry in shapereader.Reader(str(path)).geometries():
        for part in getattr(geometry, "geoms", [geometry]):
            parts.append(np.asarray(part.coords)[:, :2])
            parts.append(np.full((1, 2), np.nan))
    return np.concatenate(parts) if parts else np.empty((0, 2))


def map_plot(frame: pd.DataFrame):
    """Collection extents as rectangles over the coastline, lon/lat axes (plate carrée)."""
    coast = hv.Path([_coastline()], kdims=["lon", "lat"]).opts(color="#888888", line_width=1)
    boxes = hv.Rectangles(frame, kdims=["west", "south", "east", "north"], vdims=["collection", "title"]).opts(
        fill_alpha=0.25, color="collection", cmap=list(PALETTE), line_width=2, tools=["hover"])
    return (coast * boxes).opts(responsive=True, min_height=320, xlim=(-180, 180), ylim=(-90, 90),
                                xlabel="longitude", ylabel="latitude", show_legend=False)  # fmt: skip


def chart(spec: ViewSpec, frame: pd.DataFrame):
    """The panel object drawing `frame` the way `spec.kind` says."""
    if frame.empty and spec.kind not in ("table", "numbers"):
        return pn.pane.Alert("No data for these filters.", alert_type="light")
    options = {"responsive": True, "min_height": 300, "title": ""}
    if spec.kind == "numbers":
        return pn.FlexBox(*[pn.indicators.Number(label=str(row.statistic), value=float(row.value),
                                                 format="{value:,.3f}" if "DCU" in row.statistic else "{value:,.0f}",
                                                 font_size="28pt", title_size="10pt")
                            for row in frame.itertuples()])  # fmt: skip
    if spec.kind == "bar":
        shown = _day_labels(frame, spec.x) if pd.api.types.is_datetime64_any_dtype(frame[spec.x]) else frame
        return pn.pane.HoloViews(shown.hvplot.bar(x=spec.x, y=spec.y, rot=45, **options), sizing_mode="stretch_width")
    if spec.kind == "stacked":
        shown = _day_labels(frame, spec.x)
        plot = shown.hvplot.bar(x=spec.x, y=spec.y, by=spec.by, stacked=True, rot=45, legend="top_left", **options)
        return pn.pane.HoloViews(plot, sizing_mode="stretch_width")
    if spec.kind == "curve":
        plot = frame.hvplot.line(x=spec.x, y=spec.y, by=spec.by, **options) if spec.by else \
            frame.hvplot.line(x=spec.x, y=spec.y, **options)  # fmt: skip
        return pn.pane.HoloViews(plot, sizing_mode="stretch_width")
    if spec.kind == "hist":
        return pn.pane.HoloViews(frame.hvplot.hist(spec.x, bins=20, **options), sizing_mode="stretch_width")
    if spec.kind == "pie":
        return pn.pane.Bokeh(pie_figure(frame, spec.x, spec.y), sizing_mode="stretch_width")
    if spec.kind == "gantt":
        return pn.pane.Bokeh(gantt_figure(frame, spec.x), sizing_mode="stretch_width")
    if spec.kind == "map":
        return pn.pane.HoloViews(map_plot(frame), sizing_mode="stretch_width")
    return pn.widgets.Tabulator(frame, disabled=True, pagination="local", page_size=15, show_index=False,
                                sizing_mode="stretch_width")  # fmt: skip


class ExecutiveView(pn.viewable.Viewer):
    """One panel: the spec's chart of the store's data (redrawn when a filter changes) with CSV and XLSX downloads.

    `data()` is the exported frame. Build only specs the viewer may see (`views_for`).
    """

    spec = param.ClassSelector(class_=ViewSpec, constant=True, doc="What this panel shows.")
    store = param.ClassSelector(class_=ExecutiveStore, constant=True, doc="The filters and the sources.")

    def data(self) -> pd.DataFrame:
        return self.spec.data(self.store)

    def csv(self) -> io.BytesIO:
        return io.BytesIO(exports.csv_bytes(self.data()))

    def xlsx(self) -> io.BytesIO:
        return io.BytesIO(exports.xlsx_bytes(self.data(), self.spec.name))

    @param.depends("store.start", "store.end", "store.profile", "store.service", "store.group")
    def _content(self):
        try:
            frame = self.data()
        except SourceUnavailable as error:
            return pn.pane.Alert(str(error), alert_type="warning")
        return chart(self.spec, frame)

    def downloads(self) -> pn.Row:
        name = self.spec.name
        return pn.Row(
            pn.widgets.FileDownload(callback=self.csv, filename=f"{name}.csv", label="CSV", color="light",
                                    embed=False, width=90),
            pn.widgets.FileDownload(callback=self.xlsx, filename=f"{name}.xlsx", label="Excel", color="light",
                                    embed=False, width=90),
        )  # fmt: skip

    def __panel__(self):
        spec = self.spec
        header = f"{spec.title} (restricted)" if spec.restricted else spec.title
        # defer_load: in a served page the cards, filters and texts arrive at once and each chart follows when the
        # page has loaded (building the charts' Bokeh models is most of a page's cost); without a server, as now
        content = pn.panel(self._content, defer_load=True, loading_indicator=True)
        return pn.Card(pn.pane.Markdown(spec.description, margin=(0, 10)), content,
                       self.downloads(), title=header, collapsible=True, sizing_mode="stretch_width",
                       name=spec.name, css_classes=["desp-exec-view", f"desp-exec-{spec.name}"])  # fmt: skip
