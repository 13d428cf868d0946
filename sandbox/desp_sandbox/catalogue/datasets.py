"""What the sample data is: paths, grids, times, variables, tiles. Pure constants shared by the generator
(`sample_data.py`) and the STAC builders (`records.py`), so the catalogue describes exactly what is on disk.

Names, dimension orders and dtypes follow the platform's products (see desp-interfaces.md): ERA5 single levels
`(valid_time, latitude 90→-90, longitude 0→359)`, Climate DT regridded `(time, latitude -90→90, longitude
-180→179)`, Sentinel-2 L2A bands as uint16 UTM Cloud-Optimised GeoTIFFs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

UTC = timezone.utc

ERA5_COLLECTION = "EO.ECMWF.DAT.REANALYSIS_ERA5_SINGLE_LEVELS"
CLIMATE_DT_COLLECTION = "EO.ECMWF.DAT.D1.DT_CLIMATE.G2.PROJECTIONS_SSP3-7.0_IFS-NEMO.R1"
S2_COLLECTION = "EO.ESA.DAT.SENTINEL-2.MSI.L2A"
EXTREMES_COLLECTION = "EO.ECMWF.DAT.DT_EXTREMES"


@dataclass(frozen=True)
class Variable:
    name: str  # the netCDF/xarray name (cube:variables key)
    param: str  # ECMWF shortName (ecmwf:param)
    param_id: int  # ECMWF paramId
    variable: str  # CDS-style long name (ecmwf:variable)
    long_name: str
    units: str


T2M = Variable("t2m", "2t", 167, "2m_temperature", "2 metre temperature", "K")
D2M = Variable("d2m", "2d", 168, "2m_dewpoint_temperature", "2 metre dewpoint temperature", "K")
U10 = Variable("u10", "10u", 165, "10m_u_component_of_wind", "10 metre U wind component", "m s**-1")
V10 = Variable("v10", "10v", 166, "10m_v_component_of_wind", "10 metre V wind component", "m s**-1")
MSL = Variable("msl", "msl", 151, "mean_sea_level_pressure", "Mean sea level pressure", "Pa")
TPRATE = Variable("tprate", "tprate", 260048, "total_precipitation_rate", "Total precipitation rate",
                  "kg m**-2 s**-1")  # fmt: skip


@dataclass(frozen=True)
class GridProduct:
    """A regular lat/lon Zarr store: dims (time_dim, latitude, longitude), float32 variables."""

    path: str  # relative to the cache directory
    time_dim: str
    start: datetime
    steps: int
    step: timedelta
    lat_first: float  # 90 (north first) or -90 (south first)
    lon_first: float  # 0 or -180
    resolution: float  # degrees
    variables: tuple[Variable, ...]
    chunks: tuple[int, int, int]
    seed: int

    @property
    def n_lat(self) -> int:
        return int(round(180 / self.resolution)) + 1

    @property
    def n_lon(self) -> int:
        return int(round(360 / self.resolution))

    @property
    def latitudes(self) -> list[float]:
        sign = -1 if self.lat_first > 0 else 1
        return [self.lat_first + sign * i * self.resolution for i in range(self.n_lat)]

    @property
    def longitudes(self) -> list[float]:
        return [self.lon_first + i * self.resolution for i in range(self.n_lon)]

    @property
    def times(self) -> list[datetime]:
        return [self.start + i * self.step for i in range(self.steps)]

    @property
    def end(self) -> datetime:
        return self.start + (self.steps - 1) * self.step


ERA5 = GridProduct(
    path="era5/reanalysis-era5-single-levels-v0.zarr", time_dim="valid_time",
    start=datetime(2024, 1, 1, tzinfo=UTC), steps=48, step=timedelta(hours=1),
    lat_first=90.0, lon_first=0.0, resolution=1.0, variables=(T2M, MSL), chunks=(24, 32, 32), seed=5,
)  # fmt: skip

CLIMATE_DT = GridProduct(
    path="d1-climate-dt/ScenarioMIP-SSP3-7.0-IFS-NEMO-0001-high-sfc-v0.zarr", time_dim="time",
    start=datetime(2030, 1, 1, tzinfo=UTC), steps=24, step=timedelta(hours=6),
    lat_first=-90.0, lon_first=-180.0, resolution=1.0, variables=(T2M, D2M, U10, V10, TPRATE),
    chunks=(12, 64, 64), seed=7,
)  # fmt: skip


# Sentinel-2 L2A ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Band:
    name: str
    common_name: str | None
    center_wavelength: float  # micrometres
    full_width_half_max: float
    gsd: int  # metres
    description: str


S2_BANDS = (
    Band("B02", "blue", 0.490, 0.098, 10, "Blue"),
    Band("B03", "green", 0.560, 0.045, 10, "Green"),
    Band("B04", "red", 0.665, 0.038, 10, "Red"),
    Band("B08", "nir", 0.842, 0.145, 10, "NIR 1"),
    Band("B05", "rededge", 0.705, 0.019, 20, "Red edge 1"),
    Band("B06", "rededge", 0.740, 0.018, 20, "Red edge 2"),
    Band("B07", "rededge", 0.783, 0.028, 20, "Red edge 3"),
    Band("B8A", "nir08", 0.865, 0.033, 20, "NIR 2"),
    Band("B11", "swir16", 1.610, 0.143, 20, "SWIR 1.6 µm"),
    Band("B12", "swir22", 2.190, 0.242, 20, "SWIR 2.2 µm"),
)
SCL = "SCL"  # scene classification, 20 m, uint8 classes 0-11 (as in the real product; the bands are uint16)
S2_SIZE_10M = 512  # pixels of a 10 m band; 20 m bands have half
S2_BLOCK = 256
S2_EPSG = 32632


@dataclass(frozen=True)
class Tile:
    mgrs: str  # e.g. 32TMS
    x0: float  # UTM upper-left corner (metres)
    y0: float
    seed: int


S2_TILES = (Tile("32TMS", 399960.0, 5100000.0, 11), Tile("32TNS", 499980.0, 5100000.0, 13))


@dataclass(frozen=True)
class Scene:
    tile: Tile
    when: datetime
    cloud_cover: float  # per cent, the generator makes exactly this share of cloud pixels
    platform: str

    @property
    def id(self) -> str:
        stamp = self.when.strftime("%Y%m%dT%H%M%S")
        return f"S2{self.platform[-1].upper()}_MSIL2A_{stamp}_N0510_R108_T{self.tile.mgrs}_{stamp}"

    @property
    def directory(self) -> str:
        return f"sentinel-2/{self.tile.mgrs}/{self.when:%Y/%m/%d}/{self.id}"


def _scenes() -> tuple[Scene, ...]:
    covers = {("32TMS", 0): 2.5, ("32TMS", 1): 47.25, ("32TMS", 2): 11.0,
              ("32TNS", 0): 0.75, ("32TNS", 1): 88.5, ("32TNS", 2): 23.4}  # fmt: skip
    scenes = []
    for tile in S2_TILES:
        for index in range(3):
            when = datetime(2024, 6, 5, 10, 30, 31, tzinfo=UTC) + timedelta(days=10 * index)
            platform = "sentinel-2a" if index % 2 == 0 else "sentinel-2b"
            scenes.append(Scene(tile, when, covers[(tile.mgrs, index)], platform))
    return tuple(scenes)


S2_SCENES = _scenes()


def scene_files(scene: Scene) -> dict[str, str]:
    """Asset key → file name inside the scene directory."""
    files = {band.name: f"T{scene.tile.mgrs}_{scene.when:%Y%m%dT%H%M%S}_{band.name}_{band.gsd}m.tif"
             for band in S2_BANDS}  # fmt: skip
    files[SCL] = f"T{scene.tile.mgrs}_{scene.when:%Y%m%dT%H%M%S}_SCL_20m.tif"
    files["thumbnail"] = "thumbnail.png"
    return files


# Digital Twin extremes (orderable: nothing on disk until ordered) -----------------------------------------------

EXTREMES_VARIABLES = (T2M, U10, V10, MSL, D2M)
EXTREMES_DATES = tuple(datetime(2024, 5, 1, tzinfo=UTC) + timedelta(days=i) for i in range(6))
EXTREMES_STEPS = (0, 6, 12, 18, 24)  # hours
# the region an order produces (Europe, 0.5°), small: a few hundred kB per order
EXTREMES_AREA = (72.0, -25.0, 30.0, 45.0)  # N, W, S, E
EXTREMES_RESOLUTION = 0.5
