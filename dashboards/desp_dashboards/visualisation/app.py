"""The visualisation dashboard's app: `create_app(context)` places the views in a responsive Panel template.

A share link's query (`pn.state.location.search`, or `query=` in tests) restores every setting and opens the view
read-only; without one the dashboard starts from the default scenario template. The sidebar holds the settings and
collapses on a phone-sized screen (FastListTemplate).
"""

from __future__ import annotations

import panel as pn

from .. import offline_maps
from ..context import DashboardContext
from ..offline import page_template
from . import scenarios, share
from .store import DataStore
from .views import ExportView, MapView, SeriesView, SettingsView, ShareView, ensure_backend

TITLE = "DESP · Visualisation"
PHONE_WIDTH = 768  # px: below this the sidebar starts collapsed (the ☰ button opens it)


class CollapseOnPhone(pn.custom.JSComponent):
    """Closes the template's sidebar when the page opens on a narrow (phone) screen; renders nothing."""

    _esm = f"""
    export function render({{ model }}) {{
      if (window.innerWidth < {PHONE_WIDTH} && typeof window.closeNav === "function") {{ window.closeNav() }}
      return document.createElement("span")
    }}
    """
DEFAULT_TEMPLATE = "era5-europe-cold-start"


def page_url(context: DashboardContext) -> str:
    return f"{(context.public_url or '').rstrip('/')}/visualisation"


def _current_query() -> str:
    location = pn.state.location
    return location.search if location is not None and location.search else ""


def build(context: DashboardContext, query: str | None = None) -> dict:
    """The store and views of one session (what `create_app` lays out; tests use it to reach the parts)."""
    offline_maps()
    ensure_backend()
    store = DataStore(context)
    templates = scenarios.load_templates()
    store.settings.param.template.objects = list(templates)
    notices = []
    try:
        store.load_collections()
    except Exception as error:  # the catalogue is down or refuses: say so, keep the page
        notices.append(f"The catalogue cannot be read: {error}")
    query = _current_query() if query is None else query
    read_only = False
    values = {}
    if query.lstrip("?"):
        try:
            values, read_only = share.decode(query)
        except share.ShareLinkError as error:
            notices.append(f"{error}. Showing the default view instead.")
    if values:
        share.apply(store.settings, values)
    elif DEFAULT_TEMPLATE in templates:
        templates[DEFAULT_TEMPLATE].apply(store.settings)
    map_view = MapView(store=store, read_only=read_only)
    return {
        "store": store, "templates": templates, "read_only": read_only, "notices": notices, "map": map_view,
        "series": SeriesView(map=map_view),
        "settings": SettingsView(store=store, templates=templates, read_only=read_only),
        "exports": ExportView(store=store), "share": ShareView(store=store, base_url=page_url(context)),
    }


def storyline(store: DataStore, templates: dict):
    def text(name):
        template = templates.get(name)
        if template is None:
            return ""
        return f"### {template.title}\n\n{template.storyline}\n\n*Region: {template.region}*"

    return pn.pane.Markdown(pn.bind(text, store.settings.param.template), sizing_mode="stretch_width")


def create_app(context: DashboardContext, query: str | None = None) -> pn.viewable.Viewable:
    """The visualisation dashboard of one session."""
    parts = build(context, query)
    notices = [pn.pane.Alert(text, alert_type="warning", sizing_mode="stretch_width") for text in parts["notices"]]
    main = [
        pn.Column(*notices, parts["map"], sizing_mode="stretch_width"),
        pn.Column(parts["series"], storyline(parts["store"], parts["templates"]), sizing_mode="stretch_width"),
        pn.Column(parts["share"], parts["exports"], sizing_mode="stretch_width"),
    ]
    template = page_template(
        title=TITLE, sidebar=[parts["settings"]], main=main, header=[CollapseOnPhone(height=0, width=0)], sidebar_width=330, collapsed_sidebar=False,
        main_layout=None, accent="#0b5394", header_background="#0b5394",
    )
    template.desp_parts = parts  # for tests and the service: the store and views behind the page
    return template
