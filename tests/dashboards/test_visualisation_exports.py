"""Exports of the shown view against the sandbox data: PNG (matplotlib backend), standalone HTML (bokeh, inline
resources), NetCDF and CSV of the shown subset at the chosen resolution, checked against the source store."""

import datetime as dt
import io
import re

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from desp_dashboards.visualisation import exports
from desp_dashboards.visualisation.store import DataStore
from tests.dashboards.test_visualisation_store import ERA5, ERA5_PATH, context  # noqa: F401  (fixture)

BBOX = (0.0, 40.0, 20.0, 55.0)


@pytest.fixture
def store(context):  # noqa: F811
    store = DataStore(context)
    store.settings.param.update(collection=ERA5, variable="t2m", time=dt.datetime(2024, 1, 1, 6), bbox=BBOX,
                                projection="Robinson", cmap="coolwarm", clim=(260.0, 290.0))
    return store


@pytest.fixture(scope="module")
def source(sandbox_catalogue):
    """The same numbers read straight from the Zarr store, in the dashboard's orientation."""
    data = xr.open_zarr(sandbox_catalogue.cache_dir / ERA5_PATH)["t2m"]
    return data.sel(latitude=slice(55, 40), longitude=slice(0, 20)).isel(latitude=slice(None, None, -1))


def test_png(store):
    data = exports.png(store)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000


def test_png_leaves_the_bokeh_backend(store):
    import holoviews as hv

    from desp_dashboards.visualisation.views import ensure_backend

    ensure_backend()
    exports.png(store)
    assert hv.Store.current_backend == "bokeh"


def test_png_is_a_picture_of_the_map(store):
    from PIL import Image

    image = Image.open(io.BytesIO(exports.png(store, dpi=80)))
    assert image.width > 400 and image.height > 200
    colours = np.asarray(image.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(colours, axis=0)) > 50  # a coloured field, not a blank canvas


def test_html_is_standalone(store):
    page = exports.html(store).decode("utf-8")
    assert page.lstrip().lower().startswith("<!doctype html")
    assert re.search(r'<script type="application/json" id="[^"]+">\s*\{', page)  # the bokeh document JSON
    assert "Bokeh" in page and "root_ids" in page
    sources = re.findall(r"<script[^>]*\bsrc\s*=\s*[\"']([^\"']+)", page)
    assert not [src for src in sources if re.match(r"(https?:)?//", src)]  # nothing fetched from elsewhere
    assert not re.search(r"<link[^>]+href=[\"']https?://", page)


def test_netcdf_of_the_shown_step(store, source):
    data = exports.netcdf(store)
    assert data[:4] == b"\x89HDF"
    dataset = _open_nc(data)
    assert list(dataset.data_vars) == ["t2m"]
    assert dataset["t2m"].sizes == {"time": 1, "latitude": 16, "longitude": 21}
    np.testing.assert_array_equal(dataset["t2m"].values[0], source.sel(valid_time="2024-01-01T06:00").values)
    assert dataset.attrs["bbox"].tolist() == list(BBOX)


def test_netcdf_of_the_period_coarsened(store, source):
    store.settings.time_range = (dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 1, 23))
    dataset = _open_nc(exports.netcdf(store, factor=4))
    assert dataset["t2m"].sizes == {"time": 24, "latitude": 4, "longitude": 5}
    expected = source.isel(valid_time=slice(0, 24)).coarsen(latitude=4, longitude=4, boundary="trim").mean()
    np.testing.assert_allclose(dataset["t2m"].values, expected.values, rtol=1e-6)
    np.testing.assert_allclose(dataset["latitude"].values, expected["latitude"].values)


def test_netcdf_on_a_target_grid(store):
    dataset = _open_nc(exports.netcdf(store, grid=2.5))
    assert dataset["t2m"].sizes == {"time": 1, "latitude": 7, "longitude": 9}
    assert np.allclose(np.diff(dataset["longitude"].values), 2.5)


def test_csv_rows_and_columns(store, source):
    frame = pd.read_csv(io.BytesIO(exports.csv(store)), parse_dates=["time"])
    assert list(frame.columns) == ["time", "latitude", "longitude", "t2m"]
    assert len(frame) == 16 * 21
    assert set(frame["time"]) == {pd.Timestamp("2024-01-01T06:00")}
    row = frame[(frame.latitude == 50) & (frame.longitude == 10)].iloc[0]
    assert row.t2m == float(source.sel(valid_time="2024-01-01T06:00", latitude=50, longitude=10))
    store.settings.time_range = (dt.datetime(2024, 1, 2), dt.datetime(2024, 1, 2, 11))
    coarse = pd.read_csv(io.BytesIO(exports.csv(store, factor=2)))
    assert len(coarse) == 12 * 8 * 10


def test_export_dispatch_and_names(store):
    assert exports.filename(store, "nc") == "t2m_20240101T0600.nc"
    with pytest.raises(ValueError, match="unknown export"):
        exports.export(store, "gif")
    with pytest.raises(Exception, match="factor"):
        exports.export(store, "csv", factor=0)


def _open_nc(data: bytes) -> xr.Dataset:
    import os
    import tempfile

    handle, path = tempfile.mkstemp(suffix=".nc")
    os.write(handle, data)
    os.close(handle)
    try:
        return xr.open_dataset(path, engine="netcdf4").load()
    finally:
        os.unlink(path)
