"""The executive statistics dashboard's page: filters in the sidebar, one card per view, an "about" text.

`create_app(context)` builds one session's page (a responsive `FastListTemplate`: the sidebar collapses on a phone).
Restricted views are not built at all for viewers outside the restricted group, so nothing of them reaches their
browser. `view_data(name, context, filters)` is the data endpoints' entry (see `views.view_data`).
"""

from __future__ import annotations

import panel as pn

from .sources import ALL, Filters, SourceUnavailable, missing_sources
from .store import ExecutiveStore
from .views import VIEWS, ExecutiveView, view_data, views_for

__all__ = ["ALL", "Filters", "SourceUnavailable", "about_text", "create_app", "filter_widgets", "view_data",
           "build_views", "VIEWS"]  # fmt: skip

TITLE = "DESP executive statistics"


def about_text(context) -> str:
    """What the dashboard shows, where each number comes from, and what is not recorded yet."""
    missing = "\n".join(f"- **{what}**: {why}." for what, why in missing_sources())
    audience = ("You are in the restricted group: per-user tables and the Gantt by user are shown."
                if context.may_see_restricted else
                "This page shows aggregates only (counts and sums; no user names). Per-user views are restricted to "
                f"the `{context.restricted_group}` group.")  # fmt: skip
    return f"""\
### About these statistics

Users, groups and servers come from the hub; DCU consumption and server runs from the accounting service's ledger
(every metered server run records its session and covered periods); the map shows the catalogue collections'
extents (where the platform's data is, not where users are). Times are UTC. Every panel's data can be downloaded as
CSV or Excel.

{audience}

Not shown yet, because nothing records them so far (each becomes a source, and a panel, once recorded):

{missing}
"""


def filter_widgets(store: ExecutiveStore) -> pn.Column:
    """The filter widgets, made from the store's parameters."""
    return pn.Column(
        pn.widgets.DatetimePicker.from_param(store.param.start, name="From (UTC)", enable_time=False),
        pn.widgets.DatetimePicker.from_param(store.param.end, name="To (UTC, exclusive)", enable_time=False),
        pn.widgets.Select.from_param(store.param.profile, name="Profile"),
        pn.widgets.Select.from_param(store.param.service, name="Service"),
        pn.widgets.Select.from_param(store.param.group, name="Group"),
        sizing_mode="stretch_width",
    )


def build_views(context, store: ExecutiveStore) -> list[ExecutiveView]:
    """One view per spec this viewer may see (restricted specs are never built for others)."""
    return [ExecutiveView(spec=spec, store=store) for spec in views_for(context)]


def create_app(context, filters: Filters | None = None, sources: list | None = None):
    """One session's page of the executive dashboard for `context`'s viewer.

    `filters`: the initial filters (default: the last 30 days); `sources`: the Source objects to read instead of
    the registered ones (tests, or a deployment adding its own).
    """
    from desp_dashboards import offline_maps
    from desp_dashboards.offline import page_template

    pn.extension("tabulator", notifications=False)
    offline_maps()
    store = ExecutiveStore(context, filters, sources=sources)
    try:
        store.refresh_options()
    except SourceUnavailable:
        pass  # the menus keep "All"; the panels say what is unavailable
    views = build_views(context, store)
    template = page_template(title=TITLE, sidebar_width=260, collapsed_sidebar=False,
                                            accent="#0b5394", header_background="#0b5394")  # fmt: skip
    template.sidebar.append(filter_widgets(store))
    template.main.append(pn.FlexBox(*[pn.Column(view, sizing_mode="stretch_width", min_width=320,
                                                styles={"flex": "1 1 480px"}) for view in views],
                                    sizing_mode="stretch_width"))  # fmt: skip
    template.main.append(pn.pane.Markdown(about_text(context), sizing_mode="stretch_width",
                                          css_classes=["desp-exec-about"]))  # fmt: skip
    return template
