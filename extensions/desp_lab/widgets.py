"""Catalogue search inside a notebook: `SearchWidget`, the ipywidgets twin of the "DESP Data" panel.

    from desp_lab.widgets import SearchWidget
    search = SearchWidget()          # a Catalogue from the environment, or SearchWidget(catalogue=...)
    search                           # pick a collection, bbox, dates, free text; press Search; select a result
    ds = search.selected_dataset()   # the selected item, lazily, as an xarray Dataset

Everything is driven by widget values, so it also works without a browser: set `.collection.value`,
`.bbox.value`, ... then `.search_button.click()`, and read `.results`, `.result_list.options`, `.message.value`.
Errors (a malformed bbox, an unknown collection, the catalogue down) appear as a message in the widget, never as a
traceback; `.error` holds the last one.

`TraceWidget` traces a file or folder, verifies it against its registered trace and searches traces by hash;
`BalanceWidget` (and the function `balance_status()`) shows the DCU balance and this session's cost, like the
JupyterLab status bar.
"""

from __future__ import annotations

import datetime as dt
import decimal
import html
import os

import ipywidgets as widgets

from desp_lab.errors import DespError
from desp_lab.search_pages import DEFAULT_PAGE_SIZE, item_summary, item_time_label, parse_bbox, search_page

#: Shown in the collection dropdown for "all collections".
ALL_COLLECTIONS = ""


def datetime_interval(start: dt.date | None, end: dt.date | None) -> str | None:
    """Two picked dates → an RFC 3339 interval covering both whole days (UTC); an open end is `..`."""
    if start is None and end is None:
        return None
    first = f"{start.isoformat()}T00:00:00Z" if start else ".."
    last = f"{end.isoformat()}T23:59:59Z" if end else ".."
    return f"{first}/{last}"


class SearchWidget(widgets.VBox):
    """Search the DESP catalogue and open a result in xarray, inside a notebook.

    `catalogue`: a `desp_lab.catalogue.Catalogue` (default: one from DESP_CATALOGUE_URL and the user's token).
    `page_size`: results per page.
    """

    def __init__(self, catalogue=None, page_size: int = DEFAULT_PAGE_SIZE, **kwargs):
        self.page_size = page_size
        #: pystac Items of the page shown, and their JSON summaries (same shape as the REST API's).
        self.results: list = []
        self.summaries: list[dict] = []
        self.page = 1
        self.next_page: int | None = None
        self.matched: int | None = None
        #: The last error (a DespError, or another exception shown as a message), None after a good search.
        self.error: Exception | None = None

        self.collection = widgets.Dropdown(description="Collection", options=[("All collections", ALL_COLLECTIONS)])
        self.bbox = widgets.Text(description="Bbox", placeholder="west,south,east,north (degrees)")
        self.start_date = widgets.DatePicker(description="From")
        self.end_date = widgets.DatePicker(description="To")
        self.text = widgets.Text(description="Text", placeholder="free text: id, parameter, ...")
        self.search_button = widgets.Button(description="Search", button_style="primary", icon="search")
        self.previous_button = widgets.Button(description="Previous", icon="arrow-left", disabled=True)
        self.next_button = widgets.Button(description="Next", icon="arrow-right", disabled=True)
        self.page_label = widgets.Label(value="")
        self.result_list = widgets.Select(options=[], rows=10, description="Results", layout=widgets.Layout(width="100%"))
        self.code = widgets.Textarea(description="Code", disabled=True, layout=widgets.Layout(width="100%", height="5em"))
        self.message = widgets.HTML(value="")

        self.search_button.on_click(lambda _button: self.search(page=1))
        self.previous_button.on_click(lambda _button: self.search(page=max(1, self.page - 1)))
        self.next_button.on_click(lambda _button: self.next_page and self.search(page=self.next_page))
        self.result_list.observe(self._show_code, names="value")

        super().__init__(
            children=[
                self.collection,
                self.bbox,
                widgets.HBox([self.start_date, self.end_date]),
                self.text,
                self.search_button,
                self.message,
                self.result_list,
                widgets.HBox([self.previous_button, self.page_label, self.next_button]),
                self.code,
            ],
            **kwargs,
        )
        self.catalogue = catalogue
        self._load_collections()

    # -- catalogue ---------------------------------------------------------------------------------------------

    def _catalogue(self):
        if self.catalogue is None:
            from desp_lab.catalogue import Catalogue

            self.catalogue = Catalogue()
        return self.catalogue

    def _load_collections(self) -> None:
        """Fill the collection dropdown from the catalogue; a failure is shown, the widget stays usable."""
        try:
            collections = self._catalogue().collections()
        except Exception as error:
            self._show_error(error)
            return
        options = [("All collections", ALL_COLLECTIONS)]
        options += [(f"{collection.title or collection.id} ({collection.id})", collection.id) for collection in collections]
        self.collection.options = options

    def search(self, page: int = 1) -> None:
        """Run the search the widget's values describe and show page `page` (what the Search button does)."""
        collection = self.collection.value
        try:
            result = search_page(
                self._catalogue(),
                page=page,
                limit=self.page_size,
                text=self.text.value or None,
                collections=[collection] if collection else None,
                bbox=parse_bbox(self.bbox.value.strip()),
                datetime=datetime_interval(self.start_date.value, self.end_date.value),
            )
        except Exception as error:
            self.results, self.summaries, self.next_page, self.matched = [], [], None, None
            self.result_list.options = []
            self._update_paging()
            self._show_error(error)
            return
        self.error = None
        self.page, self.next_page, self.matched = result["page"], result["next_page"], result["matched"]
        self.results = result["items"]
        self.summaries = [item_summary(item) for item in self.results]
        self.result_list.options = [
            (f"{item.id}  —  {item_time_label(item)}", index) for index, item in enumerate(self.results)
        ]
        self.result_list.value = 0 if self.results else None
        self._update_paging()
        found = "no items" if not self.results else f"{len(self.results)} item{'s' if len(self.results) != 1 else ''}"
        total = f" of {self.matched}" if self.matched is not None else ""
        self.message.value = html.escape(f"Page {self.page}: {found}{total}.")

    # -- selection ---------------------------------------------------------------------------------------------

    @property
    def selected_item(self):
        """The pystac Item selected in the results (None when nothing is)."""
        index = self.result_list.value
        if index is None or not (0 <= index < len(self.results)):
            return None
        return self.results[index]

    def selected_dataset(self, **kwargs):
        """The selected item opened lazily as an xarray Dataset (`kwargs` go to the SDK's `to_xarray`).

        An orderable placeholder (`order:status=orderable`) is ordered first, waiting until its data is ready.
        """
        item = self.selected_item
        if item is None:
            raise DespError("Select a search result first.", field="item", status=400)
        catalogue = self._catalogue()
        if item.properties.get("order:status") == "orderable":
            self.message.value = html.escape(f"Ordering {item.id}; this waits until the data is ready.")
            item = catalogue.order(item)
            self.message.value = html.escape(f"Ordered {item.id}: ready.")
            return catalogue.to_xarray(item, **kwargs)
        return catalogue.open_item(item.collection_id, item.id, **kwargs)

    to_xarray = selected_dataset

    def _show_code(self, change=None) -> None:
        index = self.result_list.value
        self.code.value = self.summaries[index]["code"] if index is not None and index < len(self.summaries) else ""

    # -- display -----------------------------------------------------------------------------------------------

    def _update_paging(self) -> None:
        self.previous_button.disabled = self.page <= 1 or not self.results
        self.next_button.disabled = self.next_page is None
        self.page_label.value = f"page {self.page}" if self.results else ""

    def _show_error(self, error: Exception) -> None:
        """Show an error as one line in the widget (DespError: its message; others: type and text)."""
        self.error = error
        if isinstance(error, DespError):
            text = error.message
        else:
            text = f"{type(error).__name__}: {error}"
        self.message.value = f'<span style="color: var(--jp-error-color1, #d32f2f)">{html.escape(text)}</span>'


# ----------------------------------------------------------------------------------------------- DCU balance


def dcu(value) -> str | None:
    """An amount (Decimal, number or string) as the accounting API writes it: a string with 3 decimals."""
    if value is None or value == "":
        return None
    try:
        return str(decimal.Decimal(str(value)).quantize(decimal.Decimal("0.001")))
    except decimal.InvalidOperation:
        return str(value)


def _field(record, name):
    return record.get(name) if isinstance(record, dict) else getattr(record, name, None)


def session_total(listing: dict) -> decimal.Decimal:
    """The cost of a session from `Accounting.transactions(session=...)`: its `total` (the debits, over all the
    session's transactions, not just the page) less its `credits` (corrections)."""
    return decimal.Decimal(str(listing["total"])) - decimal.Decimal(str(listing.get("credits") or 0))


def balance_status(accounting=None, user: str | None = None, session: str | None = None, profile: str | None = None,
                   dcu_per_hour: str | None = None) -> dict:  # fmt: skip
    """The user's DCU account and this session's cost, as the status bar shows them (amounts: strings, 3 decimals).

    `accounting`: a `desp_lab.accounting.Accounting` (default: one from DESP_ACCOUNTING_URL and the user's token).
    `user`: the account (default: the token's owner). `session`, `profile`, `dcu_per_hour`: default from the
    environment the hub sets (DESP_SESSION_ID, DESP_PROFILE, DESP_DCU_PER_HOUR). Returns `{"user", "mode",
    "balance", "available", "monthly_quota", "used_this_month", "profile", "dcu_per_hour", "session",
    "session_cost"}`; session_cost is the total of this session's transactions (None without a session).
    """
    if accounting is None:
        from desp_lab.accounting import Accounting

        accounting = Accounting()
    session = session if session is not None else os.environ.get("DESP_SESSION_ID", "")
    profile = profile if profile is not None else os.environ.get("DESP_PROFILE", "")
    dcu_per_hour = dcu_per_hour if dcu_per_hour is not None else os.environ.get("DESP_DCU_PER_HOUR", "")
    account = accounting.account(user or None)
    user = _field(account, "user") or user
    # The totals cover every transaction of the session: one row of the page is enough.
    session_cost = dcu(session_total(accounting.transactions(user, session=session, limit=1))) if session else None
    return {
        "user": user,
        "mode": _field(account, "mode"),
        "balance": dcu(_field(account, "balance")),
        "available": dcu(_field(account, "available")),
        "monthly_quota": dcu(_field(account, "monthly_quota")),
        "used_this_month": dcu(_field(account, "used_this_month")),
        "profile": profile or None,
        "dcu_per_hour": dcu(dcu_per_hour) if dcu_per_hour else None,
        "session": session or None,
        "session_cost": session_cost,
    }


def balance_text(status: dict) -> str:
    """One line like the status bar's: `DCU 97.250 · session 0.750`."""
    available = status.get("available") or status.get("balance") or "?"
    if status.get("session_cost") is not None:
        return f"DCU {available} · session {status['session_cost']}"
    return f"DCU {available}"


class BalanceWidget(widgets.HBox):
    """The user's DCU balance (or what is left of the monthly quota) and this session's cost, with a Refresh button.

    `accounting`, `user`, `session`: as for `balance_status`. `.refresh()` (what the button does) asks the
    accounting service again; `.status` holds the last answer, `.error` the last error (shown as a message).
    """

    def __init__(self, accounting=None, user: str | None = None, session: str | None = None, **kwargs):
        self.accounting = accounting
        self.user = user
        self.session = session
        self.status: dict | None = None
        self.error: Exception | None = None
        self.label = widgets.HTML(value="")
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh", layout=widgets.Layout(width="auto"))
        self.refresh_button.on_click(lambda _button: self.refresh())
        super().__init__(children=[self.label, self.refresh_button], **kwargs)
        self.refresh()

    def refresh(self) -> None:
        try:
            if self.accounting is None:
                from desp_lab.accounting import Accounting

                self.accounting = Accounting()
            self.status = balance_status(self.accounting, user=self.user, session=self.session)
        except Exception as error:
            self.error = error
            text = error.message if isinstance(error, DespError) else f"{type(error).__name__}: {error}"
            self.label.value = f'<span style="color: var(--jp-error-color1, #d32f2f)">{html.escape(text)}</span>'
            return
        self.error = None
        status = self.status
        mode = "monthly quota" if status["mode"] == "arrears" else "balance"
        title = f"{status['user']}: {mode}"
        if status["profile"]:
            title += f", profile {status['profile']}"
            if status["dcu_per_hour"]:
                title += f" at {status['dcu_per_hour']} DCU/h"
        self.label.value = f'<b title="{html.escape(title)}">{html.escape(balance_text(status))}</b>'


# ----------------------------------------------------------------------------------------------- traces


class TraceWidget(widgets.VBox):
    """Trace a file or folder (Zarr store), verify it against its registered trace, search traces by hash.

        from desp_lab.widgets import TraceWidget
        TraceWidget()        # a TraceClient from DESP_TRACE_URL and the user's token, or TraceWidget(client=...)

    Driven by widget values like SearchWidget: set `.path.value`, click `.trace_button` / `.verify_button`, set
    `.hash.value`, click `.search_button`; read `.trace` (the last trace, registered when `.send` was checked),
    `.result` (the last `VerifyResult`), `.found` (the traces found), `.message.value`, `.error`.
    """

    def __init__(self, client=None, path: str = "", **kwargs):
        from desp_lab import trace as trace_sdk

        self._sdk = trace_sdk
        self.client = client
        self.trace: dict | None = None
        self.result = None
        self.found: list[dict] = []
        self.error: Exception | None = None

        self.path = widgets.Text(value=path, description="Path", placeholder="file or folder (Zarr store)")
        self.algorithm = widgets.Dropdown(description="Algorithm", options=list(trace_sdk.ALGORITHMS), value="BLAKE3")
        self.send = widgets.Checkbox(value=True, description="register with the trace service", indent=False)
        self.trace_button = widgets.Button(description="Trace", button_style="primary", icon="fingerprint")
        self.verify_button = widgets.Button(description="Verify", icon="check")
        self.hash = widgets.Text(description="Hash", placeholder="hex hash to search for")
        self.search_button = widgets.Button(description="Search", icon="search")
        self.message = widgets.HTML(value="")
        self.details = widgets.HTML(value="")

        self.trace_button.on_click(lambda _button: self.run_trace())
        self.verify_button.on_click(lambda _button: self.run_verify())
        self.search_button.on_click(lambda _button: self.run_search())
        super().__init__(
            children=[
                self.path,
                widgets.HBox([self.algorithm, self.send]),
                widgets.HBox([self.trace_button, self.verify_button]),
                widgets.HBox([self.hash, self.search_button]),
                self.message,
                self.details,
            ],
            **kwargs,
        )

    def _client(self):
        if self.client is None:
            self.client = self._sdk.TraceClient()
        return self.client

    def run_trace(self) -> dict | None:
        """Trace `.path` with `.algorithm` (registering it when `.send` is checked); what the Trace button does."""
        try:
            trace = self._sdk.generate(self._path(), algorithm=self.algorithm.value)
            if self.send.value:
                trace = self._client().send(trace)
        except Exception as error:
            self._show_error(error)
            return None
        self.error, self.trace = None, trace
        registered = f" registered as {trace['id']}" if trace.get("id") else " (not registered)"
        self._show(f"Traced {trace['product']['name']}{registered}.", _trace_rows(trace))
        return trace

    def run_verify(self):
        """Verify `.path` against its registered trace; what the Verify button does. Returns the VerifyResult."""
        try:
            result = self._client().verify(self._path())
        except Exception as error:
            self._show_error(error)
            return None
        self.error, self.result = None, result
        rows = [("registered", result.expected), ("now", result.actual)]
        for label, paths in (("changed", result.changed), ("missing", result.missing), ("added", result.added)):
            if paths:
                rows.append((label, ", ".join(paths)))
        verdict = "OK: unaltered." if result.ok else "MISMATCH: differs from its registered trace."
        color = "var(--jp-success-color1, #388e3c)" if result.ok else "var(--jp-error-color1, #d32f2f)"
        self._show(f"{result.name}: {verdict}", rows, color=color)
        return result

    def run_search(self) -> list[dict]:
        """Traces whose product hash is `.hash`; what the Search button does."""
        try:
            wanted = self.hash.value.strip().lower()
            if not wanted:
                raise DespError("Give a hash to search for.", field="hash", status=400)
            found = self._client().search(hash=wanted)
        except Exception as error:
            self.found = []
            self._show_error(error)
            return []
        self.error, self.found = None, found
        rows = [
            (trace.get("timestamp") or "",
             f"{trace['product']['name']} ({trace['event']}, {trace.get('origin') or '?'}, id {trace.get('id')})")
            for trace in found
        ]  # fmt: skip
        self._show(f"{len(found)} trace{'s' if len(found) != 1 else ''} with this hash.", rows)
        return found

    def _path(self) -> str:
        path = self.path.value.strip()
        if not path:
            raise DespError("Give the path of a file or folder to trace.", field="path", status=400)
        return path

    def _show(self, text: str, rows, color: str | None = None) -> None:
        style = f' style="color: {color}"' if color else ""
        self.message.value = f"<b{style}>{html.escape(text)}</b>"
        cells = "".join(
            f"<tr><td>{html.escape(str(key))}</td><td><code>{html.escape(str(value))}</code></td></tr>"
            for key, value in rows
        )
        self.details.value = f"<table>{cells}</table>"

    def _show_error(self, error: Exception) -> None:
        self.error = error
        text = error.message if isinstance(error, DespError) else f"{type(error).__name__}: {error}"
        self.message.value = f'<span style="color: var(--jp-error-color1, #d32f2f)">{html.escape(text)}</span>'
        self.details.value = ""


def _trace_rows(trace: dict) -> list[tuple[str, str]]:
    product = trace["product"]
    rows = [("product", product["name"]), (trace["hash_algorithm"], product["hash"]),
            ("size", f"{product.get('size')} bytes")]  # fmt: skip
    if product.get("contents"):
        rows.append(("members", str(len(product["contents"]))))
    if trace.get("id"):
        rows += [("id", trace["id"]), ("registered", f"{trace.get('timestamp')} by {trace.get('origin')}")]
    return rows
