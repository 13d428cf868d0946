"""Catalogue search inside a notebook: `SearchWidget`, the ipywidgets twin of the "DESP Data" panel.

    from desp_lab.widgets import SearchWidget
    search = SearchWidget()          # a Catalogue from the environment, or SearchWidget(catalogue=...)
    search                           # pick a collection, bbox, dates, free text; press Search; select a result
    ds = search.selected_dataset()   # the selected item, lazily, as an xarray Dataset

Everything is driven by widget values, so it also works without a browser: set `.collection.value`,
`.bbox.value`, ... then `.search_button.click()`, and read `.results`, `.result_list.options`, `.message.value`.
Errors (a malformed bbox, an unknown collection, the catalogue down) appear as a message in the widget, never as a
traceback; `.error` holds the last one.
"""

from __future__ import annotations

import datetime as dt
import html

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
