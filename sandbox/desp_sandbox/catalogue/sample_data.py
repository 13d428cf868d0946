"""Generate the sandbox's sample data into the cache directory, once: deterministic, small, plausible.

* ERA5-like and Climate-DT-like Zarr stores (format 2, consolidated metadata, Blosc/Zstd): smooth analytic fields
  (latitude gradient, diurnal cycle, travelling waves) plus a little seeded noise, with the mantissa rounded to
  ~12 bits so they compress well;
* Sentinel-2-L2A-like scenes: one directory per scene with uint16 COGs of the 10 m and 20 m bands (digital numbers
  with the L2A offset of 1000), a uint8 SCL scene classification whose cloud share is the scene's declared cloud
  cover, and a small PNG thumbnail.

Each product is written under a temporary name and renamed into place, so a product that exists is complete and an
interrupted run only redoes what is missing. Everything depends on fixed seeds only: two runs give identical data.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np

from . import datasets as ds

log = logging.getLogger("desp_sandbox.catalogue.sample_data")

SENSING_OFFSET = 1000  # L2A digital number = reflectance * 10000 + 1000 (processing baseline >= 04.00)

# typical surface reflectances of each band (B02 B03 B04 B08 B05 B06 B07 B8A B11 B12)
VEGETATION = [0.03, 0.06, 0.04, 0.35, 0.10, 0.25, 0.30, 0.36, 0.18, 0.09]
SOIL = [0.08, 0.11, 0.14, 0.24, 0.17, 0.20, 0.22, 0.25, 0.30, 0.25]
WATER = [0.05, 0.04, 0.02, 0.006, 0.015, 0.010, 0.008, 0.005, 0.002, 0.001]
CLOUD = [0.62, 0.60, 0.61, 0.63, 0.61, 0.62, 0.63, 0.63, 0.45, 0.32]


def _bitround(values: np.ndarray, keepbits: int = 12) -> np.ndarray:
    """Zero the low mantissa bits of float32 values (round to nearest): same values to ~4 digits, far smaller."""
    bits = values.astype(np.float32).view(np.uint32)
    drop = 23 - keepbits
    half = np.uint32(1 << (drop - 1))
    mask = np.uint32(~((1 << drop) - 1) & 0xFFFFFFFF)
    return ((bits + half) & mask).view(np.float32)


def _move_into_place(temporary: Path, target: Path) -> None:
    """Rename a finished product into place; if another process finished the same product first, keep theirs."""
    try:
        temporary.rename(target)
    except OSError:
        if not target.exists():
            raise
        shutil.rmtree(temporary, ignore_errors=True)


# Grids (Zarr) ---------------------------------------------------------------------------------------------------


def analytic_fields(names, latitudes, longitudes, times, seed: int, warm: float = 0.0) -> dict[str, np.ndarray]:
    """float32 arrays (time, latitude, longitude) of the named variables on a lat/lon grid (degrees).

    Smooth analytic fields (latitude gradient, diurnal cycle in local solar time, a travelling wave) plus a little
    noise from a numpy RNG seeded with `seed`; `warm` adds kelvins to the temperatures.
    """
    rng = np.random.default_rng(seed)
    lat = np.radians(np.asarray(latitudes, dtype=float))[None, :, None]
    lon_deg = np.asarray(longitudes, dtype=float)[None, None, :]
    lon = np.radians(lon_deg)
    hours = np.array([(t - times[0]).total_seconds() / 3600 for t in times])[:, None, None]
    local_hour = (hours + times[0].hour + lon_deg / 15.0) % 24
    diurnal = np.cos(2 * np.pi * (local_hour - 14) / 24)
    wave = np.cos(2 * lon - 2 * np.pi * (hours + seed * 7) / 96 + 3 * lat)
    shape = (len(times), lat.shape[1], lon.shape[2])

    def noise(scale):
        return rng.normal(0.0, scale, shape)

    t2m = 299.0 + warm - 45.0 * np.sin(lat) ** 2 + 5.0 * np.cos(lat) * diurnal
    t2m = t2m + 3.0 * np.sin(3 * lon) * np.cos(2 * lat) + 2.0 * wave * np.cos(lat) + noise(0.3)
    makers = {
        "t2m": lambda: t2m,
        "d2m": lambda: t2m - 2.0 - 6.0 * np.cos(lat) ** 2 * (1 + np.sin(2 * lon)) / 2 - np.abs(noise(0.5)),
        "msl": lambda: 101325.0 + 1500.0 * np.sin(2 * lat) * wave + 600.0 * np.cos(3 * lon + 4 * lat) + noise(30.0),
        "u10": lambda: 7.0 * np.cos(3 * lat) * np.cos(lat) + 4.0 * wave + noise(0.8),
        "v10": lambda: 4.0 * np.sin(2 * lon - 2 * np.pi * hours / 48) * np.cos(lat) + noise(0.8),
        "tprate": lambda: 4e-5 * np.clip(np.cos(6 * lat) * 0.5 + wave + noise(0.3), 0.0, None) ** 2,
    }
    return {name: _bitround(np.broadcast_to(makers[name](), shape).astype(np.float32)) for name in names}


def grid_fields(product: ds.GridProduct) -> dict[str, np.ndarray]:
    """The float32 arrays (time, latitude, longitude) of a grid product, by variable name."""
    warm = 1.5 if product.start.year >= 2030 else 0.0  # a warmer world in the projection
    names = [v.name for v in product.variables]
    return analytic_fields(names, product.latitudes, product.longitudes, product.times, product.seed, warm)


def grid_dataset(product: ds.GridProduct):
    """The xarray Dataset of a grid product (CF attributes, GRIB-style variable attributes)."""
    import xarray as xr

    coords = {
        product.time_dim: (product.time_dim, np.array([t.replace(tzinfo=None) for t in product.times],
                                                      dtype="datetime64[ns]"), {"standard_name": "time"}),
        "latitude": ("latitude", np.array(product.latitudes), {"units": "degrees_north", "standard_name": "latitude"}),
        "longitude": ("longitude", np.array(product.longitudes),
                      {"units": "degrees_east", "standard_name": "longitude"}),
    }  # fmt: skip
    dims = (product.time_dim, "latitude", "longitude")
    fields = grid_fields(product)
    data_vars = {
        v.name: (dims, fields[v.name], {"units": v.units, "long_name": v.long_name, "GRIB_paramId": v.param_id,
                                         "GRIB_shortName": v.param})  # fmt: skip
        for v in product.variables
    }
    attrs = {"Conventions": "CF-1.7", "institution": "European Centre for Medium-Range Weather Forecasts",
             "history": "synthetic sample data generated by the DESP Hub sandbox (not real model output)"}  # fmt: skip
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def write_grid(product: ds.GridProduct, cache_dir: Path) -> Path:
    """Write a grid product as a consolidated Zarr (format 2) store, via a temporary name."""
    import numcodecs

    target = cache_dir / product.path
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    compressor = numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
    encoding = {v.name: {"chunks": product.chunks, "compressors": [compressor]} for v in product.variables}
    grid_dataset(product).to_zarr(temporary, zarr_format=2, consolidated=True, encoding=encoding)
    _move_into_place(temporary, target)
    return target


# Sentinel-2 ------------------------------------------------------------------------------------------------------


def _smooth_field(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, waves: int = 12, scale: float = 2500.0):
    """A smooth random field in [-1, 1]-ish on coordinates in metres: a sum of random plane waves."""
    total = np.zeros(np.broadcast(x, y).shape)
    for _ in range(waves):
        angle = rng.uniform(0, 2 * np.pi)
        wavelength = scale * rng.uniform(0.3, 1.5)
        phase = rng.uniform(0, 2 * np.pi)
        total += np.cos(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / wavelength + phase)
    return total / np.sqrt(waves / 2)


def _pixel_centres(tile: ds.Tile, size: int, gsd: int):
    coords = (np.arange(size) + 0.5) * gsd
    return tile.x0 + coords[None, :], tile.y0 - coords[:, None]


def scene_arrays(scene: ds.Scene) -> dict[str, np.ndarray]:
    """The band arrays of one scene: 10 m bands 512², 20 m bands and SCL 256² (pure computation)."""
    index = ds.S2_SCENES.index(scene)
    land_rng = np.random.default_rng(scene.tile.seed)  # the landscape is the tile's, the same on every date
    land_waves = [(land_rng.uniform(0, 2 * np.pi), land_rng.uniform(800, 4000), land_rng.uniform(0, 2 * np.pi))
                  for _ in range(24)]  # fmt: skip
    cloud_seed = 1000 * scene.tile.seed + index
    season = 0.1 * np.sin(2 * np.pi * (scene.when.timetuple().tm_yday - 120) / 365)

    def landscape(x, y):
        fields = []
        for part in (land_waves[:12], land_waves[12:]):
            total = sum(np.cos(2 * np.pi * (x * np.cos(a) + y * np.sin(a)) / w + p) for a, w, p in part)
            fields.append(total / np.sqrt(len(part) / 2))
        vegetation = np.clip(0.5 + 0.35 * fields[0] + season, 0, 1)
        water = fields[1] > 1.6
        return vegetation, water

    # cloud threshold from the 20 m grid, so the SCL cloud share is exactly the declared cloud cover
    x20, y20 = _pixel_centres(scene.tile, ds.S2_SIZE_10M // 2, 20)
    cloud20 = _smooth_field(np.random.default_rng(cloud_seed), x20, y20, scale=3000.0)
    n = cloud20.size
    cloudy_pixels = int(round(scene.cloud_cover / 100 * n))
    order = np.sort(cloud20, axis=None)
    threshold = order[n - cloudy_pixels] if cloudy_pixels else np.inf

    noise_rng = np.random.default_rng(cloud_seed + 500)
    arrays: dict[str, np.ndarray] = {}
    for gsd, size in ((10, ds.S2_SIZE_10M), (20, ds.S2_SIZE_10M // 2)):
        x, y = _pixel_centres(scene.tile, size, gsd)
        vegetation, water = landscape(x, y)
        cloud_field = _smooth_field(np.random.default_rng(cloud_seed), x, y, scale=3000.0)
        cloud = cloud_field >= threshold
        shadow = np.roll(cloud, (size // 16, size // 16), axis=(0, 1)) & ~cloud
        for number, band in enumerate(ds.S2_BANDS):
            if band.gsd != gsd:
                continue
            reflectance = vegetation * VEGETATION[number] + (1 - vegetation) * SOIL[number]
            reflectance = np.where(water, WATER[number], reflectance)
            reflectance = np.where(shadow, reflectance * 0.45, reflectance)
            reflectance = np.where(cloud, CLOUD[number] * (0.85 + 0.1 * np.tanh(cloud_field - threshold)), reflectance)
            dn = reflectance * 10000 + SENSING_OFFSET + noise_rng.normal(0, 12, reflectance.shape)
            arrays[band.name] = np.clip(np.round(dn), 1, 65535).astype(np.uint16)
        if gsd == 20:
            scl = np.where(vegetation > 0.5, 4, 5)
            scl = np.where(water, 6, scl)
            scl = np.where(shadow, 3, scl)
            scl = np.where(cloud, np.where(cloud_field - threshold > 0.6, 9, 8), scl)
            arrays[ds.SCL] = scl.astype(np.uint8)
    return arrays


def thumbnail(arrays: dict[str, np.ndarray], size: int = 128) -> np.ndarray:
    """A (3, size, size) uint8 true-colour preview from B04/B03/B02."""
    rgb = []
    for name in ("B04", "B03", "B02"):
        band = (arrays[name].astype(np.float32) - SENSING_OFFSET) / 10000
        factor = band.shape[0] // size
        band = band.reshape(size, factor, size, factor).mean(axis=(1, 3))
        rgb.append(np.clip(255 * (np.clip(band, 0, None) / 0.3) ** (1 / 2.2), 0, 255).astype(np.uint8))
    return np.stack(rgb)


def write_scene(scene: ds.Scene, cache_dir: Path) -> Path:
    """Write a scene's COGs and thumbnail into its directory, via a temporary directory."""
    import rasterio
    import rasterio.errors
    from affine import Affine

    target = cache_dir / scene.directory
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    arrays = scene_arrays(scene)
    files = ds.scene_files(scene)
    with rasterio.Env(GDAL_PAM_ENABLED="NO"):
        for name, array in arrays.items():
            gsd = 20 if array.shape[0] == ds.S2_SIZE_10M // 2 else 10
            profile = {
                "driver": "COG", "width": array.shape[1], "height": array.shape[0], "count": 1,
                "dtype": array.dtype.name, "crs": f"EPSG:{ds.S2_EPSG}", "nodata": 0,
                "transform": Affine(gsd, 0.0, scene.tile.x0, 0.0, -gsd, scene.tile.y0),
                "blocksize": ds.S2_BLOCK, "compress": "DEFLATE", "predictor": 2, "overview_count": 1,
                "overview_resampling": "nearest" if name == ds.SCL else "average",
            }  # fmt: skip
            with rasterio.open(temporary / files[name], "w", **profile) as dataset:
                dataset.write(array, 1)
                dataset.set_band_description(1, name)
        preview = thumbnail(arrays)
        with warnings.catch_warnings():  # a PNG preview has no georeferencing, on purpose
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(temporary / files["thumbnail"], "w", driver="PNG", width=preview.shape[2],
                               height=preview.shape[1], count=3, dtype="uint8") as png:  # fmt: skip
                png.write(preview)
    _move_into_place(temporary, target)
    return target


# all of it -------------------------------------------------------------------------------------------------------


def generate(cache_dir: Path) -> list[str]:
    """Generate whatever sample product is missing in `cache_dir`; returns the relative paths written now."""
    cache_dir = Path(cache_dir)
    written = []
    started = time.monotonic()
    for product in (ds.ERA5, ds.CLIMATE_DT):
        if not (cache_dir / product.path).exists():
            write_grid(product, cache_dir)
            written.append(product.path)
    for scene in ds.S2_SCENES:
        if not (cache_dir / scene.directory).exists():
            write_scene(scene, cache_dir)
            written.append(scene.directory)
    if written:
        log.info("generated %d sample products in %.1fs", len(written), time.monotonic() - started)
    return written
