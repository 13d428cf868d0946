"""Exports of the shown view, as bytes (the dashboard offers them as downloads; tests read them back).

- `png(store)`: the map drawn by HoloViews' matplotlib backend (GeoViews + cartopy; no browser needed);
- `html(store)`: a standalone bokeh page with the map, bokeh's JavaScript inlined (`INLINE` resources: works offline);
- `netcdf(store)` and `csv(store)`: the shown subset's numbers (`DataStore.subset`: the variable over the area of
  interest and the period — the time range, else the shown time step).

Every export takes the resolution: `factor` (block means of factor × factor grid cells) or `grid` (degrees of a
regular grid the data is interpolated onto). The pictures show the shown time step of that subset.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile

import numpy as np

from .store import DataStore

@contextlib.contextmanager
def rendering_with(backend: str):
    """HoloViews' current backend is `backend` inside, and what it was before afterwards (the dashboard's views
    keep using bokeh while a PNG is drawn with matplotlib)."""
    import holoviews as hv

    current = hv.Store.current_backend
    if backend == "matplotlib":
        import geoviews.plotting.mpl  # noqa: F401
    else:
        import geoviews.plotting.bokeh  # noqa: F401
    hv.Store.set_current_backend(backend)
    try:
        yield
    finally:
        hv.Store.set_current_backend(current)


FORMATS = {"png": "image/png", "html": "text/html", "nc": "application/x-netcdf", "csv": "text/csv"}


def _map_subset(store: DataStore, factor: int, grid: float | None):
    """The shown time step of the subset at the chosen resolution (2-D)."""
    from .store import coarsen

    return coarsen(store.field(), factor=factor, grid=grid).compute()


def _title(store: DataStore) -> str:
    shown = store.shown_time()
    variable = store.settings.variable
    when = f" {shown:%Y-%m-%d %H:%M} UTC" if shown else ""
    return f"{variable}{when} · {store.describe()}"


def map_object(store: DataStore, factor: int = 1, grid: float | None = None, backend: str = "bokeh"):
    """A static (non-dynamic) HoloViews overlay of the shown field for `backend`: image, coastline, borders."""
    import geoviews as gv
    from cartopy.feature import NaturalEarthFeature

    from .. import offline_maps
    from .views import PLATE_CARREE, make_projection

    offline_maps()
    settings = store.settings
    field = _map_subset(store, factor, grid)
    variable = settings.variable
    projection = make_projection(settings.projection, settings.bbox)
    clim = settings.clim if settings.clim is not None else (float(np.nanmin(field.values)),
                                                             float(np.nanmax(field.values)))
    image = gv.Image((field["longitude"].values, field["latitude"].values, field.values),
                     kdims=["longitude", "latitude"], vdims=[variable], crs=PLATE_CARREE)
    coast = gv.Feature(NaturalEarthFeature("physical", "coastline", "110m"), group="Coastline")
    borders = gv.Feature(NaturalEarthFeature("cultural", "admin_0_boundary_lines_land", "110m"), group="Borders")
    if backend == "matplotlib":
        image = image.opts(cmap=settings.cmap, clim=clim, colorbar=True, backend="matplotlib")
        coast = coast.opts(edgecolor="black", linewidth=0.8, facecolor="none", backend="matplotlib")
        borders = borders.opts(edgecolor="#444444", linewidth=0.5, facecolor="none", backend="matplotlib")
        return (image * coast * borders).opts(projection=projection, title=_title(store), fig_inches=(10, 6),
                                              global_extent=settings.bbox is None, backend="matplotlib")
    image = image.opts(cmap=settings.cmap, clim=clim, colorbar=True, tools=["hover"], backend="bokeh")
    coast = coast.opts(line_color="black", line_width=0.8, fill_color=None, backend="bokeh")
    borders = borders.opts(line_color="#444444", line_width=0.5, fill_color=None, backend="bokeh")
    return (image * coast * borders).opts(projection=projection, title=_title(store), width=900, height=520,
                                          global_extent=settings.bbox is None, backend="bokeh")


def png(store: DataStore, factor: int = 1, grid: float | None = None, dpi: int = 120) -> bytes:
    """The map as a PNG, rendered by HoloViews' matplotlib backend."""
    import holoviews as hv
    import matplotlib

    matplotlib.use("Agg", force=False)
    with rendering_with("matplotlib"):
        figure = hv.render(map_object(store, factor, grid, backend="matplotlib"), backend="matplotlib")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return buffer.getvalue()


def html(store: DataStore, factor: int = 1, grid: float | None = None) -> bytes:
    """A standalone HTML page of the map (bokeh, resources inlined: no network needed to open it)."""
    import holoviews as hv
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    with rendering_with("bokeh"):
        figure = hv.render(map_object(store, factor, grid, backend="bokeh"), backend="bokeh")
    page = file_html(figure, INLINE, title=_title(store))
    # Once a Panel template has been built in this process, bokeh's resources also name Panel's web-font
    # stylesheet (fonts.googleapis.com); the page needs no web font, so it keeps no link to the network.
    return EXTERNAL_STYLESHEET.sub("", page).encode("utf-8")


EXTERNAL_STYLESHEET = re.compile(r"<link[^>]+href=[\"'](?:https?:)?//[^>]*>\s*")


def netcdf(store: DataStore, factor: int = 1, grid: float | None = None) -> bytes:
    """The shown subset as NetCDF-4 (one variable; time, latitude, longitude)."""
    dataset = store.subset(factor=factor, grid=grid)
    for name in dataset.variables:  # netCDF cannot store some attribute types xarray/zarr may carry
        dataset[name].attrs = {k: v for k, v in dataset[name].attrs.items() if isinstance(v, (str, int, float))}
    descriptor, path = tempfile.mkstemp(suffix=".nc")
    os.close(descriptor)
    try:
        dataset.to_netcdf(path, engine="netcdf4")
        with open(path, "rb") as handle:
            return handle.read()
    finally:
        os.unlink(path)


def csv(store: DataStore, factor: int = 1, grid: float | None = None) -> bytes:
    """The shown subset as CSV: one row per (time, latitude, longitude) with the variable's value."""
    dataset = store.subset(factor=factor, grid=grid)
    variable = store.settings.variable
    frame = dataset[variable].to_dataframe().reset_index()
    columns = [c for c in ("time", "latitude", "longitude") if c in frame.columns] + [variable]
    return frame[columns].to_csv(index=False).encode("utf-8")


EXPORTERS = {"png": png, "html": html, "nc": netcdf, "csv": csv}


def export(store: DataStore, kind: str, factor: int = 1, grid: float | None = None) -> bytes:
    if kind not in EXPORTERS:
        raise ValueError(f"unknown export {kind!r} (one of {', '.join(EXPORTERS)})")
    return EXPORTERS[kind](store, factor=factor, grid=grid)


def filename(store: DataStore, kind: str) -> str:
    shown = store.shown_time()
    stamp = f"_{shown:%Y%m%dT%H%M}" if shown else ""
    return f"{store.settings.variable}{stamp}.{kind}"
