"""The visualisation dashboard's views: `pn.viewable.Viewer` subclasses over a `DataStore`.

- `MapView`: the chosen field as a GeoViews image, rasterised by datashader (`rasterize`: each pan or zoom re-renders
  only what fits the screen), in the chosen projection, with Natural Earth coastlines and borders from the shipped
  files; a Tap stream (click → time series) and a BoundsXY stream (box select → area of interest).
- `SeriesView`: the time series at the clicked point.
- `SettingsView`: widgets made from the settings' parameters (`from_param`), disabled for a shared (read-only) view.

Views hold no data of their own: they read the store and write the store's settings, so they are built and inspected
without a server (the HoloViews objects are plain attributes).
"""

from __future__ import annotations

import math

import cartopy.crs as ccrs
import geoviews as gv
import holoviews as hv
import numpy as np
import panel as pn
import param
from cartopy.feature import NaturalEarthFeature
from holoviews.operation.datashader import rasterize

from .. import offline_maps
from .store import DataStore

DEFAULT_CENTRE = (10.0, 45.0)  # lon, lat of Orthographic/NearsidePerspective without an area of interest
PLATE_CARREE = ccrs.PlateCarree()
_backend_loaded = False


def ensure_backend() -> None:
    """Load HoloViews' and GeoViews' bokeh plotting once (no notebook output)."""
    global _backend_loaded
    if not _backend_loaded:
        import geoviews.plotting.bokeh  # noqa: F401  (registers GeoViews' bokeh plots)

        hv.Store.set_current_backend("bokeh")
        _backend_loaded = True


def centre(bbox) -> tuple[float, float]:
    if bbox is None:
        return DEFAULT_CENTRE
    west, south, east, north = bbox
    if west > east:  # across the antimeridian
        east += 360
    lon = ((west + east) / 2 + 180) % 360 - 180
    return lon, (south + north) / 2


def make_projection(name: str, bbox=None) -> ccrs.Projection:
    """The cartopy projection `name` (see store.PROJECTIONS); globe views are centred on the area of interest."""
    lon, lat = centre(bbox)
    if name == "PlateCarree":
        return ccrs.PlateCarree()
    if name == "Orthographic":
        return ccrs.Orthographic(central_longitude=lon, central_latitude=lat)
    if name == "NearsidePerspective":
        return ccrs.NearsidePerspective(central_longitude=lon, central_latitude=lat)
    if name == "Mercator":
        return ccrs.Mercator()
    if name in ("Robinson", "Mollweide", "EqualEarth"):
        return getattr(ccrs, name)()
    raise ValueError(f"unknown projection {name!r}")


def to_lonlat(x: float, y: float, projection: ccrs.Projection) -> tuple[float, float] | None:
    """Map coordinates of `projection` → (longitude, latitude); None off the globe."""
    if isinstance(projection, ccrs.PlateCarree):
        return float(x), float(y)
    lon, lat = PLATE_CARREE.transform_point(x, y, projection)
    if not (math.isfinite(lon) and math.isfinite(lat)):
        return None
    return float(lon), float(lat)


def bounds_to_bbox(bounds, projection: ccrs.Projection) -> tuple[float, float, float, float] | None:
    """A box drawn on the map (in map coordinates) as a lon/lat bbox enclosing it, rounded to 0.01°."""
    x0, y0, x1, y1 = bounds
    xs, ys = np.meshgrid(np.linspace(min(x0, x1), max(x0, x1), 21), np.linspace(min(y0, y1), max(y0, y1), 21))
    if isinstance(projection, ccrs.PlateCarree):
        lon, lat = xs.ravel(), ys.ravel()
    else:
        points = PLATE_CARREE.transform_points(projection, xs.ravel(), ys.ravel())
        lon, lat = points[:, 0], points[:, 1]
    keep = np.isfinite(lon) & np.isfinite(lat)
    if not keep.any():
        return None
    lon, lat = np.clip(lon[keep], -180, 180), np.clip(lat[keep], -90, 90)
    west, east = math.floor(lon.min() * 100) / 100, math.ceil(lon.max() * 100) / 100
    south, north = math.floor(lat.min() * 100) / 100, math.ceil(lat.max() * 100) / 100
    if west >= east or south >= north:
        return None
    return (west, south, east, north)


def coastline() -> gv.Feature:
    """Natural Earth 110m coastline (shipped; `desp_dashboards.offline_maps()` must have been called)."""
    return gv.Feature(NaturalEarthFeature("physical", "coastline", "110m"), group="Coastline").opts(
        line_color="black", line_width=0.8, fill_color=None, backend="bokeh")


def borders() -> gv.Feature:
    """Natural Earth 110m land borders between countries (shipped)."""
    return gv.Feature(NaturalEarthFeature("cultural", "admin_0_boundary_lines_land", "110m"), group="Borders").opts(
        line_color="#444444", line_width=0.5, line_dash="dashed", fill_color=None, backend="bokeh")


def field_image(field, variable: str, projection: ccrs.Projection) -> gv.Image:
    """A computed 2-D (latitude, longitude) field as a GeoViews image in `projection` (projected when needed)."""
    image = gv.Image((field["longitude"].values, field["latitude"].values, np.asarray(field.values)),
                     kdims=["longitude", "latitude"], vdims=[variable], crs=PLATE_CARREE)
    if not isinstance(projection, ccrs.PlateCarree):
        image = gv.project(image, projection=projection)
    return image


class MapView(pn.viewable.Viewer):
    """The map of the chosen field: datashader-rasterised image, coastlines, borders, tap and box select."""

    store = param.ClassSelector(class_=DataStore)
    read_only = param.Boolean(default=False, doc="A shared view: drawing a box does not change the area")

    DATA_SETTINGS = ("source", "collection", "item", "cache_path", "variable", "time", "bbox")

    def __init__(self, **params):
        super().__init__(**params)
        offline_maps()  # coastlines and borders from the shipped files, never a download
        ensure_backend()
        self.tap = hv.streams.Tap(x=None, y=None)
        self.bounds = hv.streams.BoundsXY(bounds=None)
        self.bounds.param.watch(self._bounds_drawn, "bounds")
        self.projection = make_projection(self.store.settings.projection, self.store.settings.bbox)
        self.image = self.raster = self.overlay = None
        self.build()
        self._pane = pn.pane.HoloViews(self.overlay, sizing_mode="stretch_width")
        self.store.settings.param.watch(self._rebuild, "projection")

    # -- building -------------------------------------------------------------------------------------------------

    def _image(self, **_settings) -> gv.Image:
        store = self.store
        variable = store.settings.variable or "value"
        try:
            field = store.field().compute()
        except Exception:  # nothing chosen yet, or the dataset failed (store.error says why)
            return gv.Image((np.array([-180.0, 180.0]), np.array([-90.0, 90.0]), np.full((2, 2), np.nan)),
                            kdims=["longitude", "latitude"], vdims=[variable], crs=PLATE_CARREE)
        return field_image(field, variable, self.projection)

    def build(self) -> hv.Overlay:
        """(Re)build the HoloViews objects for the current projection."""
        settings = self.store.settings
        self.projection = make_projection(settings.projection, settings.bbox)
        self.image = hv.DynamicMap(self._image, streams=[hv.streams.Params(settings, list(self.DATA_SETTINGS))])
        raster = rasterize(self.image, precompute=True)
        self.raster = raster.apply.opts(
            cmap=settings.param.cmap,
            clim=settings.param.clim.rx.pipe(lambda clim: clim if clim is not None else (np.nan, np.nan)),
        ).opts(colorbar=True, tools=["hover", "tap", "box_select"], active_tools=["pan", "wheel_zoom"])
        self.tap.source = self.raster
        self.bounds.source = self.raster
        global_view = settings.projection in ("Orthographic", "NearsidePerspective") or settings.bbox is None
        overlay = (self.raster * coastline() * borders()).opts(
            projection=self.projection, global_extent=global_view, responsive=True, data_aspect=1)
        # the title follows the shown time step and variable without rebuilding the map (the zoom stays)
        self.overlay = overlay.apply.opts(title=param.bind(lambda *_: self.title(), settings.param.time,
                                                           settings.param.variable))
        return self.overlay

    def title(self) -> str:
        s = self.store.settings
        try:
            shown = self.store.shown_time()
        except Exception:  # nothing open yet, or the dataset failed (store.error says why)
            shown = s.time
        return f"{s.variable or ''} {shown:%Y-%m-%d %H:%M} UTC" if shown else (s.variable or "")

    def _rebuild(self, *_events) -> None:
        self._pane.object = self.build()

    def _bounds_drawn(self, event) -> None:
        if self.read_only or event.new is None:
            return
        bbox = bounds_to_bbox(event.new, self.projection)
        if bbox is not None:
            self.store.settings.bbox = bbox

    def tapped_lonlat(self) -> tuple[float, float] | None:
        if self.tap.x is None or self.tap.y is None:
            return None
        return to_lonlat(self.tap.x, self.tap.y, self.projection)

    def __panel__(self):
        return self._pane


class SeriesView(pn.viewable.Viewer):
    """The time series at the point clicked on the map (nearest grid point), over the time range."""

    map = param.ClassSelector(class_=MapView)

    def __init__(self, **params):
        super().__init__(**params)
        settings = self.map.store.settings
        self._pane = pn.panel(pn.bind(self.plot, self.map.tap.param.x, self.map.tap.param.y,
                                      settings.param.variable, settings.param.time_range, settings.param.collection,
                                      settings.param.item, settings.param.cache_path),
                              sizing_mode="stretch_width")

    def curve(self) -> hv.Curve | None:
        point = self.map.tapped_lonlat()
        if point is None:
            return None
        store = self.map.store
        series = store.series(*point).compute()
        lon, lat = float(series["longitude"]), float(series["latitude"])
        variable = store.settings.variable
        units = series.attrs.get("units", "")
        return hv.Curve((series["time"].values, series.values), kdims=["time"], vdims=[variable]).opts(
            title=f"{variable} at {lat:.2f}°N {lon:.2f}°E" + (f" ({units})" if units else ""),
            responsive=True, height=260, tools=["hover"], backend="bokeh")

    def plot(self, *_args):
        try:
            curve = self.curve()
        except Exception as error:
            return pn.pane.Alert(f"No time series here: {error}", alert_type="warning")
        if curve is None:
            return pn.pane.Markdown("*Click the map for the time series at that point.*")
        return pn.pane.HoloViews(curve, sizing_mode="stretch_width", height=280)

    def __panel__(self):
        return self._pane


class SettingsView(pn.viewable.Viewer):
    """Widgets for every setting, made from the parameters; `read_only` disables them (a shared view)."""

    store = param.ClassSelector(class_=DataStore)
    templates = param.Dict(default={}, doc="Scenario templates by name")
    read_only = param.Boolean(default=False)

    def __init__(self, **params):
        super().__init__(**params)
        settings = self.store.settings
        self.template = pn.widgets.Select(
            label="Scenario template", options={"(none)": None, **{t.title: n for n, t in self.templates.items()}},
            value=settings.template if settings.template in self.templates else None)
        self.template.param.watch(self._template_chosen, "value")
        self.source = pn.widgets.RadioButtonGroup.from_param(settings.param.source, name="Data from")
        self.collection = pn.widgets.Select.from_param(settings.param.collection, name="Collection")
        self.item = pn.widgets.Select(label="Item", options=self._item_options(), value=settings.item)
        self.item.param.watch(lambda event: setattr(settings, "item", event.new), "value")
        self.store.param.watch(lambda event: setattr(self.item, "options", self._item_options()), "items")
        settings.param.watch(lambda event: setattr(self.item, "value", event.new), "item")
        self.cache_path = pn.widgets.TextInput.from_param(settings.param.cache_path, name="Dataset in your cache",
                                                          placeholder="e.g. era5/….zarr")
        self.variable = pn.widgets.Select.from_param(settings.param.variable, name="Variable")
        # typed times too (YYYY-MM-DD HH:MM:SS), not only the calendar: quicker for stepping through hours
        self.time = pn.widgets.DatetimePicker.from_param(settings.param.time, name="Time (UTC)", allow_input=True)
        self.time_range = pn.widgets.DatetimeRangePicker.from_param(settings.param.time_range, name="Period")
        self.bbox = pn.widgets.LiteralInput.from_param(settings.param.bbox, name="Area: west, south, east, north")
        self.projection = pn.widgets.Select.from_param(settings.param.projection, name="Projection")
        self.cmap = pn.widgets.Select.from_param(settings.param.cmap, name="Colour map")
        self.clim = pn.widgets.LiteralInput.from_param(settings.param.clim, name="Colour range: low, high")
        self.error = pn.pane.Alert(self.store.param.error, alert_type="danger",
                                   visible=self.store.param.error.rx.pipe(bool))
        self.widgets = [self.template, self.source, self.collection, self.item, self.cache_path, self.variable,
                        self.time, self.time_range, self.bbox, self.projection, self.cmap, self.clim]
        for widget in self.widgets:
            widget.sizing_mode = "stretch_width"
            widget.disabled = self.read_only
        self.param.watch(self._read_only_changed, "read_only")

    def _item_options(self) -> dict:
        return {"(every item)": None, **{item: item for item in self.store.items}}

    def _template_chosen(self, event) -> None:
        if event.new is not None and event.new in self.templates:
            self.templates[event.new].apply(self.store.settings)

    def _read_only_changed(self, event) -> None:
        for widget in self.widgets:
            widget.disabled = event.new

    def __panel__(self):
        notice = pn.pane.Markdown("**Shared view (read-only).** Open the dashboard without the link's settings "
                                  "to explore on your own.", visible=self.read_only)
        return pn.Column(notice, self.error, *self.widgets, sizing_mode="stretch_width")


class ExportView(pn.viewable.Viewer):
    """Downloads of the shown view (PNG, HTML) and of its numbers (NetCDF, CSV) at a chosen resolution."""

    store = param.ClassSelector(class_=DataStore)
    factor = param.Integer(default=1, bounds=(1, 100), doc="Coarsen by this many grid cells in each direction")
    grid = param.Number(default=None, allow_None=True, bounds=(0.01, 90),
                        doc="Or interpolate onto a regular grid of this many degrees")

    LABELS = {"png": "PNG image", "html": "HTML page", "nc": "NetCDF", "csv": "CSV"}

    def __init__(self, **params):
        super().__init__(**params)
        self.buttons = {kind: pn.widgets.FileDownload(callback=self._callback(kind), filename=f"view.{kind}",
                                                      label=label, color="primary", embed=False,
                                                      sizing_mode="stretch_width")
                        for kind, label in self.LABELS.items()}
        self.store.settings.param.watch(self._names, ["variable", "time"])
        self._names()

    def _names(self, *_events) -> None:
        from . import exports

        for kind, button in self.buttons.items():
            try:
                button.filename = exports.filename(self.store, kind)
            except Exception:
                button.filename = f"view.{kind}"

    def _callback(self, kind: str):
        def make():
            from . import exports

            import io

            return io.BytesIO(exports.export(self.store, kind, factor=self.factor, grid=self.grid))

        return make

    def __panel__(self):
        return pn.Column(
            pn.pane.Markdown("**Export** the shown area and period (PNG/HTML: the shown time step)"),
            pn.FlexBox(pn.widgets.IntInput.from_param(self.param.factor, name="Coarsen by (cells)", width=160),
                       pn.widgets.FloatInput.from_param(self.param.grid, name="or grid (degrees)", width=160)),
            pn.FlexBox(*self.buttons.values()), sizing_mode="stretch_width")


class ShareView(pn.viewable.Viewer):
    """The share link of the current settings (follows every change)."""

    store = param.ClassSelector(class_=DataStore)
    base_url = param.String(default="", doc="The dashboard page's URL (without query)")

    def __init__(self, **params):
        super().__init__(**params)
        self.link = pn.widgets.TextInput(label="Share link (opens this view read-only)", value=self.url(),
                                         sizing_mode="stretch_width")
        self.store.settings.param.watch(lambda *_: setattr(self.link, "value", self.url()),
                                        [n for n in self.store.settings.param if n != "name"])

    def url(self) -> str:
        from .share import link

        return link(self.base_url, self.store.settings)

    def __panel__(self):
        return self.link
