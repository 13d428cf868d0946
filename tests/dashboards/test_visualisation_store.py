"""The visualisation DataStore against the sandbox's real catalogue and cache: discovery, loading through desp_lab,
normalisation, and the time / area / variable filters."""

import datetime as dt

import numpy as np
import pytest
import xarray as xr

from desp_dashboards.context import DashboardContext
from desp_dashboards.visualisation.store import DataStore, VisualisationSettings, coarsen, normalise
from desp_lab.errors import DespError

ERA5 = "EO.ECMWF.DAT.REANALYSIS_ERA5_SINGLE_LEVELS"
CLIMATE_DT = "EO.ECMWF.DAT.D1.DT_CLIMATE.G2.PROJECTIONS_SSP3-7.0_IFS-NEMO.R1"
ERA5_PATH = "era5/reanalysis-era5-single-levels-v0.zarr"


@pytest.fixture(scope="module")
def context(sandbox_catalogue):
    return DashboardContext(user="researcher", groups={"researchers"}, catalogue_url=sandbox_catalogue.stac_url,
                            cache_url=sandbox_catalogue.cache_url,
                            user_token=lambda: sandbox_catalogue.token_for("researcher"))


@pytest.fixture
def store(context):
    return DataStore(context)


@pytest.fixture(scope="module")
def era5_source(sandbox_catalogue):
    """The ERA5 store read directly (xarray + zarr over the cache directory): the reference values."""
    return xr.open_zarr(sandbox_catalogue.cache_dir / ERA5_PATH)


def test_lists_gridded_collections_and_items(store):
    assert set(store.load_collections()) >= {ERA5, CLIMATE_DT}
    assert "EO.ESA.DAT.SENTINEL-2.MSI.L2A" not in store.collections  # UTM tiles, not a lat/lon datacube
    store.settings.collection = ERA5
    assert "ERA5_SL_2T_20240101" in store.items
    assert store.settings.param.item.objects == store.items


def test_whole_collection_opens_normalised(store, era5_source):
    store.settings.collection = ERA5
    dataset = store.dataset()
    assert set(dataset.data_vars) == {"t2m", "msl"}
    assert dataset["t2m"].dims == ("time", "latitude", "longitude")
    assert dataset.sizes == {"time": 48, "latitude": 181, "longitude": 360}
    assert dataset["latitude"].values[0] == -90 and dataset["longitude"].values[0] == -180
    assert np.all(np.diff(dataset["longitude"].values) > 0)
    assert sorted(store.variables) == ["msl", "t2m"] and store.settings.variable == store.variables[0]
    assert store.times[0] == dt.datetime(2024, 1, 1) and len(store.times) == 48
    assert store.settings.time == dt.datetime(2024, 1, 1)
    # Same numbers as the source at the same place (ERA5 longitude 350 = -10).
    expected = era5_source["t2m"].sel(valid_time="2024-01-01T05:00", latitude=45, longitude=350).values
    got = dataset["t2m"].sel(time="2024-01-01T05:00", latitude=45, longitude=-10).values
    assert got == expected
    assert store.dataset() is dataset  # cached


def test_one_item_keeps_its_variable_and_day(store):
    store.settings.param.update(collection=ERA5, item="ERA5_SL_MSL_20240102")
    dataset = store.dataset()
    assert list(dataset.data_vars) == ["msl"]
    assert store.settings.variable == "msl"
    assert dataset.sizes["time"] == 24
    assert str(dataset["time"].values[0])[:10] == "2024-01-02"


def test_filters_time_bbox_variable(store, era5_source):
    store.settings.param.update(collection=ERA5, variable="t2m", time=dt.datetime(2024, 1, 1, 6, 20),
                                bbox=(0.0, 40.0, 20.0, 55.0))
    field = store.field()
    assert field.dims == ("latitude", "longitude")
    assert field.sizes == {"latitude": 16, "longitude": 21}
    assert store.shown_time() == dt.datetime(2024, 1, 1, 6)  # nearest step
    expected = era5_source["t2m"].sel(valid_time="2024-01-01T06:00", latitude=slice(55, 40), longitude=slice(0, 20))
    np.testing.assert_array_equal(field.values, expected.values[::-1, :])
    # Variable switch.
    store.settings.variable = "msl"
    assert float(store.field().mean()) > 90000
    # Period: the time range, else the shown step only.
    assert store.period().sizes["time"] == 1
    store.settings.time_range = (dt.datetime(2024, 1, 1, 12), dt.datetime(2024, 1, 2, 11))
    assert store.period().sizes["time"] == 24
    # Across the antimeridian.
    store.settings.bbox = (170.0, -10.0, -170.0, 10.0)
    longitudes = store.field()["longitude"].values
    assert len(longitudes) == 21 and set(longitudes) >= {180 - 360, 170, -170}


def test_series_at_a_point(store, era5_source):
    store.settings.param.update(collection=ERA5, variable="t2m", time_range=None)
    series = store.series(longitude=10.2, latitude=49.9)
    assert series.dims == ("time",) and series.sizes["time"] == 48
    np.testing.assert_array_equal(series.values, era5_source["t2m"].sel(latitude=50, longitude=10).values)
    store.settings.time_range = (dt.datetime(2024, 1, 2), dt.datetime(2024, 1, 2, 23))
    assert store.series(longitude=-350, latitude=50).sizes["time"] == 24  # -350 wraps to 10


def test_climate_dt_and_subset_resolution(store):
    store.settings.param.update(collection=CLIMATE_DT, variable="u10", bbox=(-10.0, 35.0, 30.0, 60.0))
    assert set(store.variables) == {"t2m", "d2m", "u10", "v10", "tprate"}
    fine = store.subset()
    assert fine["u10"].sizes == {"time": 1, "latitude": 26, "longitude": 41}
    coarse = store.subset(factor=5)
    assert coarse["u10"].sizes == {"time": 1, "latitude": 5, "longitude": 8}
    np.testing.assert_allclose(coarse["u10"].values[0, 0, 0], fine["u10"].values[0, :5, :5].mean(), rtol=1e-6)
    gridded = store.subset(grid=2.5)
    assert gridded["u10"].sizes == {"time": 1, "latitude": 11, "longitude": 17}


def test_dataset_from_the_cache(store, era5_source):
    store.settings.param.update(source="cache", cache_path=ERA5_PATH)
    assert sorted(store.variables) == ["msl", "t2m"] and store.settings.variable in store.variables
    assert store.dataset().sizes["time"] == 48
    store.settings.cache_path = "no/such.zarr"
    assert "does not exist" in store.error


def test_bad_settings_are_refused_with_the_field_named():
    settings = VisualisationSettings()
    with pytest.raises(ValueError, match="bbox"):
        settings.bbox = (10.0, 60.0, 20.0, 50.0)  # south north of north
    with pytest.raises(ValueError, match="projection"):
        settings.projection = "Flat"
    store = DataStore(None, settings=settings)
    with pytest.raises(DespError, match="Choose a collection"):
        store.data_array()


def test_normalise_and_coarsen_without_a_server():
    dataset = xr.Dataset({"v": (("valid_time", "lat", "lon"), np.arange(2 * 3 * 4, dtype="f4").reshape(2, 3, 4))},
                         coords={"valid_time": np.array(["2024-01-01", "2024-01-02"], dtype="datetime64[ns]"),
                                 "lat": [10.0, 0.0, -10.0], "lon": [0.0, 90.0, 180.0, 270.0]})
    normal = normalise(dataset)
    assert normal["v"].dims == ("time", "latitude", "longitude")
    assert list(normal["longitude"].values) == [-180.0, -90.0, 0.0, 90.0]
    assert list(normal["latitude"].values) == [-10.0, 0.0, 10.0]
    assert normal["v"].sel(latitude=10, longitude=-90).values.tolist() == [3.0, 15.0]
    with pytest.raises(Exception, match="factor"):
        coarsen(normal["v"], factor=0)
