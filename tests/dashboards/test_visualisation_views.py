"""The visualisation views and app, built without a server: the HoloViews objects behind them (datashader
rasterize, projection, shipped coastlines/borders), the tap → time series and box → area streams, the settings
widgets, and create_app restoring a share link read-only."""

import datetime as dt

import cartopy.crs as ccrs
import geoviews as gv
import holoviews as hv
import numpy as np
import panel as pn
import pytest
from holoviews.operation.datashader import rasterize

from desp_dashboards.visualisation import share
from desp_dashboards.visualisation.app import create_app
from desp_dashboards.visualisation.store import DataStore
from desp_dashboards.visualisation.views import MapView, SeriesView, SettingsView, bounds_to_bbox, make_projection
from tests.dashboards.test_visualisation_store import CLIMATE_DT, ERA5, context  # noqa: F401  (fixture)


@pytest.fixture
def store(context):  # noqa: F811
    store = DataStore(context)
    store.load_collections()
    store.settings.param.update(collection=ERA5, variable="t2m", time=dt.datetime(2024, 1, 1, 6))
    return store


def rendered(obj):
    return hv.render(obj, backend="bokeh")


def operations(dmap) -> list:
    """The operations applied along a DynamicMap's pipeline."""
    found, todo = [], [dmap]
    while todo:
        current = todo.pop()
        callback = getattr(current, "callback", None)
        if callback is None:
            continue
        if getattr(callback, "operation", None) is not None:
            found.append(callback.operation)
        todo.extend(getattr(callback, "inputs", []))
    return found


def test_map_is_rasterised_with_features_in_plate_carree(store):
    view = MapView(store=store)
    assert any(isinstance(op, rasterize) or getattr(op, "name", "") == "rasterize" for op in operations(view.raster))
    assert isinstance(view.projection, ccrs.PlateCarree)
    layers = view.overlay[()] if isinstance(view.overlay, hv.DynamicMap) else view.overlay
    kinds = [type(layer).__name__ for layer in layers]
    assert kinds.count("Feature") == 2
    features = [layer.data for layer in layers if isinstance(layer, gv.Feature)]
    assert {(f.category, f.name, f.scale) for f in features} == {
        ("physical", "coastline", "110m"), ("cultural", "admin_0_boundary_lines_land", "110m")}
    raster = view.raster[()] if isinstance(view.raster, hv.DynamicMap) else view.raster
    assert isinstance(raster, hv.Image)
    values = raster.dimension_values(2, flat=False)
    assert np.isfinite(values).mean() > 0.95 and 200 < np.nanmean(values) < 300
    figure = rendered(view.overlay)
    glyphs = [type(r.glyph).__name__ for r in figure.renderers]
    assert "Image" in glyphs and glyphs.count("MultiLine") >= 2
    assert isinstance(view.__panel__(), pn.pane.HoloViews)


@pytest.mark.parametrize("name", ["Robinson", "Mollweide", "EqualEarth", "Orthographic"])
def test_projection_is_applied(store, name):
    view = MapView(store=store)
    store.settings.projection = name  # the map rebuilds
    assert type(view.projection).__name__ == name
    overlay = view.overlay[()] if isinstance(view.overlay, hv.DynamicMap) else view.overlay
    assert overlay.opts.get("plot").kwargs["projection"] is view.projection
    image = view.image[()]
    assert image.crs == view.projection  # projected before datashader rasterises it
    figure = rendered(view.__panel__().object)
    assert figure.x_range.end - figure.x_range.start > 1000  # metres, not degrees


def test_orthographic_centres_on_the_area():
    projection = make_projection("Orthographic", (0.0, 40.0, 20.0, 60.0))
    params = projection.proj4_params
    assert params["lon_0"] == 10.0 and params["lat_0"] == 50.0


def test_rasterize_follows_the_settings(store):
    view = MapView(store=store)
    first = view.raster[()].dimension_values(2)
    store.settings.time = dt.datetime(2024, 1, 2, 18)
    second = view.raster[()].dimension_values(2)
    assert not np.allclose(first, second, equal_nan=True)
    store.settings.bbox = (0.0, 40.0, 20.0, 55.0)
    image = view.image[()]
    xs = image.dimension_values(0)
    assert xs.min() >= 0 and xs.max() <= 20
    store.settings.cmap = "inferno"
    store.settings.clim = (260.0, 280.0)
    style = view.raster[()].opts.get("style").kwargs
    assert style.get("cmap") == "inferno"
    assert tuple(view.raster[()].opts.get("plot").kwargs.get("clim")) == (260.0, 280.0)


def test_tap_gives_the_time_series(store):
    view = MapView(store=store)
    series = SeriesView(map=view)
    assert "Click the map" in series.plot().object
    view.tap.event(x=10.2, y=49.9)
    curve = series.curve()
    assert isinstance(curve, hv.Curve) and len(curve) == 48
    assert "50.00°N 10.00°E" in curve.opts.get().kwargs["title"]
    expected = store.series(10, 50).values
    np.testing.assert_array_equal(curve.dimension_values(1), expected)
    # In another projection the click is converted back to lon/lat.
    store.settings.projection = "Robinson"
    x, y = ccrs.Robinson().transform_point(10.0, 50.0, ccrs.PlateCarree())
    view.tap.event(x=x, y=y)
    lon, lat = view.tapped_lonlat()
    assert abs(lon - 10) < 1e-6 and abs(lat - 50) < 1e-6


def test_box_select_sets_the_area_unless_read_only(store):
    view = MapView(store=store)
    view.bounds.event(bounds=(0.0, 40.0, 20.5, 55.0))
    assert store.settings.bbox == (0.0, 40.0, 20.5, 55.0)
    store.settings.projection = "Mollweide"
    x0, y0 = ccrs.Mollweide().transform_point(-10.0, 35.0, ccrs.PlateCarree())
    x1, y1 = ccrs.Mollweide().transform_point(30.0, 60.0, ccrs.PlateCarree())
    bbox = bounds_to_bbox((x0, y0, x1, y1), view.projection)
    assert bbox[1] == pytest.approx(35.0, abs=0.02) and bbox[3] == pytest.approx(60.0, abs=0.02)
    frozen = MapView(store=store, read_only=True)
    before = store.settings.bbox
    frozen.bounds.event(bounds=(-1e6, 4e6, 1e6, 5e6))
    assert store.settings.bbox == before


def test_settings_widgets_come_from_the_parameters(store):
    view = SettingsView(store=store)
    assert view.collection.value == ERA5 and ERA5 in view.collection.options
    assert view.variable.value == "t2m" and set(view.variable.options) == {"t2m", "msl"}
    view.variable.value = "msl"
    assert store.settings.variable == "msl"
    view.bbox.value = (0.0, 40.0, 20.0, 55.0)
    assert store.settings.bbox == (0.0, 40.0, 20.0, 55.0)
    view.projection.value = "Robinson"
    assert store.settings.projection == "Robinson"
    view.collection.value = CLIMATE_DT
    assert "DT_CLIMATE_SSP3-7.0_IFS-NEMO_2T" in view.item.options.values()
    view.item.value = "DT_CLIMATE_SSP3-7.0_IFS-NEMO_10V"
    assert store.settings.item == "DT_CLIMATE_SSP3-7.0_IFS-NEMO_10V" and store.settings.variable == "v10"
    assert all(not widget.disabled for widget in view.widgets)
    view.read_only = True
    assert all(widget.disabled for widget in view.widgets)


def test_create_app_default_view(context):  # noqa: F811
    app = create_app(context, query="")
    assert isinstance(app, pn.template.FastListTemplate)
    parts = app.desp_parts
    assert not parts["read_only"] and parts["notices"] == []
    settings = parts["store"].settings
    assert settings.template == "era5-europe-cold-start" and settings.collection == ERA5
    assert parts["store"].field().sizes["latitude"] > 10
    assert parts["share"].link.value.startswith("/visualisation?") or "visualisation?" in parts["share"].link.value


def test_create_app_restores_a_share_link_read_only(context):  # noqa: F811
    first = create_app(context, query="").desp_parts
    first["store"].settings.param.update(collection=CLIMATE_DT, item=None, variable="tprate", projection="Mollweide",
                                         bbox=(-30.0, -10.0, 50.0, 40.0), cmap="YlGnBu", clim=(0.0, 1e-4))
    link = first["share"].link.value
    query = link.split("?", 1)[1]
    second = create_app(context, query="?" + query).desp_parts
    assert second["read_only"]
    assert second["store"].settings.values() == first["store"].settings.values()
    assert all(widget.disabled for widget in second["settings"].widgets)
    assert second["map"].read_only
    np.testing.assert_array_equal(second["store"].field().values, first["store"].field().values)


def test_create_app_with_a_bad_link_says_why(context):  # noqa: F811
    parts = create_app(context, query="?projection=Flat&shared=1").desp_parts
    assert not parts["read_only"]
    assert any("projection" in notice and "Flat" in notice for notice in parts["notices"])
    assert parts["store"].settings.projection == "EqualEarth"  # the default template's


def test_share_link_of_the_app_round_trips(context):  # noqa: F811
    parts = create_app(context, query="").desp_parts
    values, read_only = share.decode(parts["share"].link.value.split("?", 1)[1])
    assert read_only and values == parts["store"].settings.values()


def test_the_map_title_follows_the_shown_time_without_a_rebuild(store):
    view = MapView(store=store)
    overlay = view.overlay
    assert rendered(overlay).title.text == "t2m 2024-01-01 06:00 UTC"
    store.settings.time = dt.datetime(2024, 1, 2, 5, 50)  # nearest available step: 06:00 the next day
    assert view.overlay is overlay  # not rebuilt: the browser keeps its zoom
    assert rendered(view.overlay).title.text == "t2m 2024-01-02 06:00 UTC"
