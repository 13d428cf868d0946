"""The sample data and its STAC records: names, dimension orders, dtypes and chunks of the contract; COGs tiled with
overviews; items valid against the STAC item schema; generation deterministic and skipped when present."""

import json

import numpy as np
import pystac
import pytest
import rasterio
import rasterio.errors
import requests
import xarray as xr
from jsonschema import Draft7Validator
from pystac.extensions.datacube import DatacubeExtension
from pystac.extensions.eo import EOExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.validation.local_validator import get_local_schema_cache
from referencing import Registry, Resource

from desp_sandbox.catalogue import datasets, records, sample_data

ERA5_STORE = "era5/reanalysis-era5-single-levels-v0.zarr"
DT_STORE = "d1-climate-dt/ScenarioMIP-SSP3-7.0-IFS-NEMO-0001-high-sfc-v0.zarr"


def test_era5_store_has_the_contract_shape(sandbox_catalogue):
    store = xr.open_zarr(sandbox_catalogue.cache_dir / ERA5_STORE)
    assert set(store.data_vars) == {"t2m", "msl"}
    for name in ("t2m", "msl"):
        variable = store[name]
        assert variable.dims == ("valid_time", "latitude", "longitude")
        assert variable.dtype == np.float32
        assert variable.encoding["chunks"] == (24, 32, 32)
    assert store.sizes == {"valid_time": 48, "latitude": 181, "longitude": 360}
    assert store.latitude[0] == 90 and store.latitude[-1] == -90
    assert store.longitude[0] == 0 and store.longitude[-1] == 359
    assert store.t2m.attrs["units"] == "K" and store.msl.attrs["units"] == "Pa"
    t2m = store.t2m.isel(valid_time=0).values
    assert 200 < t2m.min() and t2m.max() < 320  # plausible kelvins
    assert t2m[90].mean() > t2m[0].mean() + 20  # equator warmer than the pole
    assert 95000 < float(store.msl.min()) and float(store.msl.max()) < 106000
    assert json.loads((sandbox_catalogue.cache_dir / ERA5_STORE / ".zmetadata").read_text())["zarr_consolidated_format"]


def test_climate_dt_store_has_the_contract_shape(sandbox_catalogue):
    store = xr.open_zarr(sandbox_catalogue.cache_dir / DT_STORE)
    assert set(store.data_vars) == {"t2m", "d2m", "u10", "v10", "tprate"}
    for variable in store.data_vars.values():
        assert variable.dims == ("time", "latitude", "longitude")
        assert variable.dtype == np.float32
        assert variable.encoding["chunks"] == (12, 64, 64)
    assert store.latitude[0] == -90 and store.latitude[-1] == 90
    assert store.longitude[0] == -180 and store.longitude[-1] == 179
    assert bool((store.d2m <= store.t2m).all())
    assert float(store.tprate.min()) >= 0


def test_a_small_window_touches_few_chunks(sandbox_catalogue):
    """5 % of one ERA5 time step lies in a handful of the 144 chunks of a variable."""
    store = sandbox_catalogue.cache_dir / ERA5_STORE / "t2m"
    chunk_files = [p for p in store.iterdir() if not p.name.startswith(".")]
    assert len(chunk_files) == 2 * 6 * 12
    lat_rows, lon_cols = 181 * 0.22, 360 * 0.22  # ~5 % of the area
    touched = int(np.ceil(lat_rows / 32) + 1) * int(np.ceil(lon_cols / 32) + 1)
    assert touched <= 12


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # the PNG preview, on purpose
def test_cogs_are_tiled_uint16_utm_with_overviews(sandbox_catalogue):
    scenes = sorted(sandbox_catalogue.cache_dir.glob("sentinel-2/*/*/*/*/*"))
    assert len(scenes) == 6
    for scene in scenes:
        bands = {path.name.split("_")[2]: path for path in scene.glob("*.tif")}
        assert set(bands) == {"B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12", "SCL"}
        for name, path in bands.items():
            with rasterio.open(path) as dataset:
                assert dataset.crs.to_epsg() == 32632
                assert dataset.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
                assert dataset.block_shapes == [(256, 256)]
                assert dataset.overviews(1), path.name
                assert dataset.dtypes[0] == ("uint8" if name == "SCL" else "uint16")
                size = 512 if name in ("B02", "B03", "B04", "B08") else 256
                assert dataset.shape == (size, size)
                assert dataset.res == ((10.0, 10.0) if size == 512 else (20.0, 20.0))
        with rasterio.open(scene / "thumbnail.png") as png:
            assert png.count == 3 and png.dtypes[0] == "uint8"


def test_scl_cloud_share_matches_the_items_cloud_cover(sandbox_catalogue):
    response = requests.get(f"{sandbox_catalogue.stac_url}/collections/{datasets.S2_COLLECTION}/items", timeout=30)
    for feature in response.json()["features"]:
        href = feature["assets"]["SCL"]["href"]
        path = sandbox_catalogue.cache_dir / href[len(sandbox_catalogue.cache_url) + 1 :]
        with rasterio.open(path) as dataset:
            classes = dataset.read(1)
        share = 100 * np.isin(classes, [8, 9]).mean()
        assert share == pytest.approx(feature["properties"]["eo:cloud_cover"], abs=0.01)


def core_validator(kind="item"):
    """A validator for pystac's bundled STAC 1.1.0 core schema (offline; extension schemas would need the network)."""
    cache = get_local_schema_cache()
    registry = Registry().with_resources((uri, Resource.from_contents(schema)) for uri, schema in cache.items())
    uri = f"https://schemas.stacspec.org/v1.1.0/{kind}-spec/json-schema/{kind}.json"
    return Draft7Validator(cache[uri], registry=registry)


def test_collections_are_valid_stac(sandbox_catalogue):
    validator = core_validator("collection")
    collections = requests.get(f"{sandbox_catalogue.stac_url}/collections", timeout=30).json()["collections"]
    assert len(collections) == 4
    for collection in collections:
        errors = sorted(validator.iter_errors(collection), key=str)
        assert not errors, (collection["id"], errors[:3])
        pystac.Collection.from_dict(collection)


def test_items_from_the_api_are_valid_stac(sandbox_catalogue):
    validator = core_validator()
    response = requests.post(f"{sandbox_catalogue.stac_url}/search", json={"limit": 200}, timeout=30)
    features = response.json()["features"]
    assert len(features) >= 45
    for feature in features:
        errors = sorted(validator.iter_errors(feature), key=str)
        assert not errors, (feature["id"], errors[:3])
        item = pystac.Item.from_dict(feature)
        if "datacube" in " ".join(item.stac_extensions):
            cube = DatacubeExtension.ext(item)
            assert cube.variables and all(v.dimensions for v in cube.variables.values())
        if item.collection_id == datasets.S2_COLLECTION:
            assert EOExtension.ext(item).cloud_cover is not None
            assert ProjectionExtension.ext(item.assets["B04"]).shape == [512, 512]
            assert [b.name for b in EOExtension.ext(item.assets["B8A"]).bands] == ["B8A"]
            assert item.assets["thumbnail"].roles == ["thumbnail"]


def test_records_are_built_without_io_and_match_the_data(sandbox_catalogue):
    items = records.items("http://example.invalid")
    assert len({(i["collection"], i["id"]) for i in items}) == len(items) == 4 + 5 + 6 + 30
    assert all(a["href"].startswith("http://example.invalid/cache/") for i in items for a in i["assets"].values())
    era5 = [i for i in items if i["collection"] == datasets.ERA5_COLLECTION][0]
    dims = era5["properties"]["cube:dimensions"]
    store = xr.open_zarr(sandbox_catalogue.cache_dir / ERA5_STORE)
    assert dims["latitude"]["extent"] == [float(store.latitude.min()), float(store.latitude.max())]
    assert dims["longitude"]["extent"] == [float(store.longitude.min()), float(store.longitude.max())]


def test_generation_is_deterministic_and_skips_what_exists(sandbox_catalogue, tmp_path):
    assert sample_data.generate(sandbox_catalogue.cache_dir) == []  # complete: nothing to redo
    scene = datasets.S2_SCENES[4]
    sample_data.write_scene(scene, tmp_path)
    for path in (tmp_path / scene.directory).iterdir():
        assert path.read_bytes() == (sandbox_catalogue.cache_dir / scene.directory / path.name).read_bytes(), path
    fields = sample_data.grid_fields(datasets.ERA5)
    store = xr.open_zarr(sandbox_catalogue.cache_dir / ERA5_STORE)
    np.testing.assert_array_equal(store.msl.values, fields["msl"])
