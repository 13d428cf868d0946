"""Pages that load nothing from another host: Panel's Fast design without its web font.

Panel's Fast design names Google's "Open Sans" stylesheet (fonts.googleapis.com) in every page it serves; offline
(or behind a strict firewall) the request fails quietly and the page waits on it, and online it tells a third party
who opens the dashboards. `OfflineFast` is the same design with no web font (the browser's sans-serif is used) and
its own script resolved from Panel's bundled files, so a served page references 127.0.0.1 (the hub) only.
`page_template(...)` is the `FastListTemplate` both dashboards use, with that design.
"""

from __future__ import annotations

import panel as pn
from panel.io.resources import CDN_DIST
from panel.theme.fast import Fast


class OfflineFast(Fast):
    """Panel's Fast design without the Google web font; every resource is served by the dashboards service."""

    _resources = {
        **Fast._resources,
        "font": {},
        # Panel resolves a relative path under the design's class name; this one names Fast's bundled file, which
        # the server maps to its local static files
        "js_modules": {**Fast._resources["js_modules"], "fast-design": f"{CDN_DIST}bundled/fast/js/fast_design.js"},
    }


def page_template(**params) -> pn.template.FastListTemplate:
    """A `FastListTemplate` with the offline design (same parameters as Panel's)."""
    return pn.template.FastListTemplate(design=OfflineFast, font="system-ui, sans-serif", font_url="", **params)
