"""STAC collections, items and queryables of the sandbox catalogue: pure functions of the dataset definitions
(`datasets.py`) and the server's public base URL (no I/O; asset hrefs are `{base_url}/cache/<path>`).

Shaped like the Data Lake's HDA: real collection ids, `ecmwf:*` properties, `cube:*` (datacube extension) on
collections and items, `eo:bands` and `proj:*` on Sentinel-2, placeholder items with an order link for the
orderable Digital Twin collection.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from . import datasets as ds

STAC_VERSION = "1.1.0"
PREFIX = "/stac/v2"
ZARR = "application/vnd+zarr"
COG = "image/tiff; application=geotiff; profile=cloud-optimized"
PNG = "image/png"

EXT = {
    "datacube": "https://stac-extensions.github.io/datacube/v2.2.0/schema.json",
    "eo": "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "proj": "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "xarray": "https://stac-extensions.github.io/xarray-assets/v1.0.0/schema.json",
    "order": "https://stac-extensions.github.io/order/v1.1.0/schema.json",
    "timestamps": "https://stac-extensions.github.io/timestamps/v1.1.0/schema.json",
}
GLOBAL = [-180.0, -90.0, 180.0, 90.0]
XARRAY_OPEN = {"engine": "zarr", "chunks": {}, "consolidated": True}


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def box(west: float, south: float, east: float, north: float) -> dict:
    return {"type": "Polygon",
            "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]]}  # fmt: skip


def cache_href(base_url: str, path: str) -> str:
    return f"{base_url}/cache/{path}"


# grid products ------------------------------------------------------------------------------------------------


def cube_dimensions(product: ds.GridProduct, start: datetime | None = None, end: datetime | None = None) -> dict:
    lats = product.latitudes
    return {
        product.time_dim: {"type": "temporal", "extent": [iso(start or product.start), iso(end or product.end)],
                           "step": f"PT{int(product.step.total_seconds() // 3600)}H"},
        "latitude": {"type": "spatial", "axis": "y", "extent": [min(lats), max(lats)],
                     "step": lats[1] - lats[0], "reference_system": 4326},
        "longitude": {"type": "spatial", "axis": "x",
                      "extent": [product.longitudes[0], product.longitudes[-1]], "step": product.resolution,
                      "reference_system": 4326},
    }  # fmt: skip


def cube_variables(product: ds.GridProduct, variables=None) -> dict:
    dims = [product.time_dim, "latitude", "longitude"]
    return {v.name: {"type": "data", "dimensions": dims, "unit": v.units, "description": v.long_name,
                     "data_type": "float32", "ecmwf:param": v.param}
            for v in (variables or product.variables)}  # fmt: skip


def zarr_asset(base_url: str, product: ds.GridProduct, title: str) -> dict:
    return {"href": cache_href(base_url, product.path), "type": ZARR, "roles": ["data"], "title": title,
            "xarray:open_kwargs": XARRAY_OPEN}  # fmt: skip


ERA5_COMMON = {"ecmwf:class": "ea", "ecmwf:dataset": "reanalysis-era5-single-levels", "ecmwf:stream": "oper",
               "ecmwf:type": "an", "ecmwf:levtype": "sfc", "ecmwf:resolution": "1.0",
               "ecmwf:product_type": "reanalysis"}  # fmt: skip
CLIMATE_DT_COMMON = {"ecmwf:class": "d1", "ecmwf:dataset": "climate-dt", "ecmwf:activity": "ScenarioMIP",
                     "ecmwf:experiment": "SSP3-7.0", "ecmwf:model": "IFS-NEMO", "ecmwf:generation": "2",
                     "ecmwf:realization": "1", "ecmwf:resolution": "high", "ecmwf:expver": "0001",
                     "ecmwf:stream": "clte", "ecmwf:type": "fc", "ecmwf:levtype": "sfc"}  # fmt: skip
EXTREMES_COMMON = {"ecmwf:class": "d1", "ecmwf:dataset": "extremes-dt", "ecmwf:expver": "0001",
                   "ecmwf:stream": "oper", "ecmwf:type": "fc", "ecmwf:levtype": "sfc",
                   "ecmwf:resolution": "high"}  # fmt: skip


def variable_properties(variable: ds.Variable) -> dict:
    return {"ecmwf:param": variable.param, "ecmwf:param_id": variable.param_id, "ecmwf:variable": variable.variable}


def item(collection: str, item_id: str, geometry: dict, bbox: list, properties: dict, assets: dict,
         extensions: list[str], links: list | None = None) -> dict:  # fmt: skip
    return {"type": "Feature", "stac_version": STAC_VERSION, "stac_extensions": [EXT[e] for e in extensions],
            "id": item_id, "collection": collection, "geometry": geometry, "bbox": bbox,
            "properties": properties, "links": links or [], "assets": assets}  # fmt: skip


def era5_items(base_url: str) -> list[dict]:
    """One item per variable per day of the ERA5 store; each points at the whole store (the `data` asset)."""
    product = ds.ERA5
    days = sorted({t.date() for t in product.times})
    items = []
    for variable in product.variables:
        for day in days:
            start = datetime(day.year, day.month, day.day, tzinfo=ds.UTC)
            end = start + timedelta(hours=23)
            properties = {"datetime": iso(start), "start_datetime": iso(start), "end_datetime": iso(end),
                          "title": f"ERA5 {variable.long_name} {day:%Y-%m-%d}", **ERA5_COMMON,
                          **variable_properties(variable), "ecmwf:date": f"{day:%Y%m%d}",
                          "cube:dimensions": cube_dimensions(product, start, end),
                          "cube:variables": cube_variables(product, [variable])}  # fmt: skip
            assets = {"data": zarr_asset(base_url, product, "ERA5 single levels (Zarr)")}
            item_id = f"ERA5_SL_{variable.param.upper()}_{day:%Y%m%d}"
            items.append(item(ds.ERA5_COLLECTION, item_id, box(*GLOBAL), GLOBAL, properties, assets,
                              ["datacube", "xarray"]))  # fmt: skip
    return items


def climate_dt_items(base_url: str) -> list[dict]:
    """One item per variable of the Climate DT store."""
    product = ds.CLIMATE_DT
    items = []
    for variable in product.variables:
        properties = {"datetime": iso(product.start), "start_datetime": iso(product.start),
                      "end_datetime": iso(product.end), "title": f"Climate DT SSP3-7.0 {variable.long_name}",
                      **CLIMATE_DT_COMMON, **variable_properties(variable),
                      "cube:dimensions": cube_dimensions(product),
                      "cube:variables": cube_variables(product, [variable])}  # fmt: skip
        assets = {"data": zarr_asset(base_url, product, "Climate DT surface fields (Zarr)")}
        item_id = f"DT_CLIMATE_SSP3-7.0_IFS-NEMO_{variable.param.upper()}"
        items.append(item(ds.CLIMATE_DT_COLLECTION, item_id, box(*GLOBAL), GLOBAL, properties, assets,
                          ["datacube", "xarray"]))  # fmt: skip
    return items


# Sentinel-2 ----------------------------------------------------------------------------------------------------


def scene_footprint(scene: ds.Scene) -> tuple[dict, list]:
    """The scene's footprint in lon/lat (from its UTM corners) and its bbox."""
    from rasterio.warp import transform_geom  # pure coordinate maths (PROJ), no file access

    size = ds.S2_SIZE_10M * 10
    x0, y0 = scene.tile.x0, scene.tile.y0
    utm = box(x0, y0 - size, x0 + size, y0)
    geometry = transform_geom(f"EPSG:{ds.S2_EPSG}", "EPSG:4326", utm, precision=6)
    ring = geometry["coordinates"][0]
    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    geometry = {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}
    return geometry, [min(lons), min(lats), max(lons), max(lats)]


def s2_items(base_url: str) -> list[dict]:
    """One item per tile and date, an asset per band (COG) plus SCL and a thumbnail."""
    items = []
    for scene in ds.S2_SCENES:
        files = ds.scene_files(scene)
        geometry, bbox = scene_footprint(scene)
        assets = {}
        for band in ds.S2_BANDS:
            size = ds.S2_SIZE_10M * 10 // band.gsd
            assets[band.name] = {
                "href": cache_href(base_url, f"{scene.directory}/{files[band.name]}"), "type": COG,
                "roles": ["data", "reflectance"], "title": f"{band.description} - {band.gsd}m", "gsd": band.gsd,
                "eo:bands": [eo_band(band)], "proj:shape": [size, size],
                "proj:transform": [band.gsd, 0.0, scene.tile.x0, 0.0, -band.gsd, scene.tile.y0],
                "raster:bands": [{"data_type": "uint16", "nodata": 0, "scale": 0.0001, "offset": -0.1,
                                  "spatial_resolution": band.gsd}],
            }  # fmt: skip
        assets[ds.SCL] = {
            "href": cache_href(base_url, f"{scene.directory}/{files[ds.SCL]}"), "type": COG,
            "roles": ["data"], "title": "Scene classification map (SCL)", "gsd": 20,
            "proj:shape": [ds.S2_SIZE_10M // 2] * 2,
            "proj:transform": [20, 0.0, scene.tile.x0, 0.0, -20, scene.tile.y0],
            "raster:bands": [{"data_type": "uint8", "nodata": 0, "spatial_resolution": 20}],
        }  # fmt: skip
        assets["thumbnail"] = {"href": cache_href(base_url, f"{scene.directory}/{files['thumbnail']}"),
                               "type": PNG, "roles": ["thumbnail"], "title": "True colour preview"}  # fmt: skip
        properties = {
            "datetime": iso(scene.when), "platform": scene.platform, "constellation": "sentinel-2",
            "instruments": ["msi"], "eo:cloud_cover": scene.cloud_cover, "proj:epsg": ds.S2_EPSG,
            "proj:centroid": {"lon": round((bbox[0] + bbox[2]) / 2, 5), "lat": round((bbox[1] + bbox[3]) / 2, 5)},
            "s2:mgrs_tile": scene.tile.mgrs, "grid:code": f"MGRS-{scene.tile.mgrs}",
            "s2:processing_baseline": "05.10", "processing:level": "L2A", "s2:product_type": "S2MSI2A",
            "sat:relative_orbit": 108, "gsd": 10,
        }  # fmt: skip
        items.append(item(ds.S2_COLLECTION, scene.id, geometry, bbox, properties, assets,
                          ["eo", "proj", "raster"]))  # fmt: skip
    return items


def eo_band(band: ds.Band) -> dict:
    entry = {"name": band.name, "center_wavelength": band.center_wavelength,
             "full_width_half_max": band.full_width_half_max, "description": band.description}  # fmt: skip
    if band.common_name:
        entry["common_name"] = band.common_name
    return entry


# the orderable Digital Twin collection ---------------------------------------------------------------------------


def order_href(base_url: str) -> str:
    return f"{base_url}{PREFIX}/collections/{ds.EXTREMES_COLLECTION}/order"


def mars_request(variable: ds.Variable, day: datetime) -> dict:
    """The MARS-style request a placeholder's retrieve link carries (and the order endpoint accepts)."""
    steps = ds.EXTREMES_STEPS
    return {**{k.split(":", 1)[1]: v for k, v in EXTREMES_COMMON.items() if k != "ecmwf:resolution"},
            "param": variable.param, "date": f"{day:%Y%m%d}", "time": "0000",
            "step": f"{steps[0]}/to/{steps[-1]}/by/{steps[1] - steps[0]}"}  # fmt: skip


def extremes_area_geometry() -> tuple[dict, list]:
    north, west, south, east = ds.EXTREMES_AREA
    return box(west, south, east, north), [west, south, east, north]


def extremes_placeholders(base_url: str) -> list[dict]:
    """One offline placeholder per parameter and date: `order:status=orderable` and a `retrieve` link to order it."""
    geometry, bbox = extremes_area_geometry()
    items = []
    for day in ds.EXTREMES_DATES:
        for variable in ds.EXTREMES_VARIABLES:
            end = day + timedelta(hours=ds.EXTREMES_STEPS[-1])
            properties = {"datetime": iso(day), "start_datetime": iso(day), "end_datetime": iso(end),
                          "title": f"Extremes DT {variable.long_name} {day:%Y-%m-%d}", **EXTREMES_COMMON,
                          **variable_properties(variable), "ecmwf:date": f"{day:%Y%m%d}", "ecmwf:time": "0000",
                          "storage:tier": "offline", "order:status": "orderable"}  # fmt: skip
            links = [{"rel": "retrieve", "href": order_href(base_url), "method": "POST", "type": "application/json",
                      "title": "Order this product", "body": mars_request(variable, day)}]  # fmt: skip
            item_id = f"DT_EXTREMES_{variable.param.upper()}_{day:%Y%m%d}"
            items.append(item(ds.EXTREMES_COLLECTION, item_id, geometry, bbox, properties, {}, ["order"], links))
    return items


def items(base_url: str) -> list[dict]:
    """Every static item of the catalogue (ordered items are made by the order endpoint)."""
    return era5_items(base_url) + climate_dt_items(base_url) + s2_items(base_url) + extremes_placeholders(base_url)


# collections -----------------------------------------------------------------------------------------------------


def collection(collection_id: str, title: str, description: str, bbox: list, start: datetime, end: datetime,
               keywords: list[str], extra: dict, extensions: list[str], providers=None) -> dict:  # fmt: skip
    return {
        "type": "Collection", "stac_version": STAC_VERSION, "stac_extensions": [EXT[e] for e in extensions],
        "id": collection_id, "title": title, "description": description, "license": "proprietary",
        "keywords": keywords,
        "providers": providers or [{"name": "ECMWF", "roles": ["producer", "licensor"],
                                    "url": "https://www.ecmwf.int"}],
        "extent": {"spatial": {"bbox": [bbox]}, "temporal": {"interval": [[iso(start), iso(end)]]}},
        "links": [], **extra,
    }  # fmt: skip


def summaries_of(variables) -> dict:
    return {"ecmwf:param": [v.param for v in variables], "ecmwf:variable": [v.variable for v in variables]}


def collections() -> list[dict]:
    era5, dt = ds.ERA5, ds.CLIMATE_DT
    s2_times = [s.when for s in ds.S2_SCENES]
    s2_boxes = [scene_footprint(s)[1] for s in ds.S2_SCENES]
    s2_bbox = [min(b[0] for b in s2_boxes), min(b[1] for b in s2_boxes),
               max(b[2] for b in s2_boxes), max(b[3] for b in s2_boxes)]  # fmt: skip
    _, extremes_bbox = extremes_area_geometry()
    extremes_end = ds.EXTREMES_DATES[-1] + timedelta(hours=ds.EXTREMES_STEPS[-1])
    return [
        collection(ds.ERA5_COLLECTION, "ERA5 hourly data on single levels (sandbox sample)",
                   "ERA5-like hourly surface fields on a 1° grid: 2 m temperature and mean sea level pressure. "
                   "Synthetic sample data shaped like the Copernicus ERA5 single-levels product.",
                   GLOBAL, era5.start, era5.end, ["ERA5", "reanalysis", "ECMWF", "Copernicus", "climate"],
                   {"cube:dimensions": cube_dimensions(era5), "cube:variables": cube_variables(era5),
                    "summaries": {**summaries_of(era5.variables), "ecmwf:levtype": ["sfc"]}},
                   ["datacube"]),
        collection(ds.CLIMATE_DT_COLLECTION, "Climate DT projections SSP3-7.0 IFS-NEMO (sandbox sample)",
                   "Climate Change Adaptation Digital Twin, ScenarioMIP SSP3-7.0, IFS-NEMO, high resolution, surface "
                   "fields regridded to 1°. Synthetic sample data with the product's names and dimensions.",
                   GLOBAL, dt.start, dt.end, ["Destination Earth", "Digital Twin", "Climate DT", "SSP3-7.0"],
                   {"cube:dimensions": cube_dimensions(dt), "cube:variables": cube_variables(dt),
                    "summaries": {**summaries_of(dt.variables), "ecmwf:levtype": ["sfc"],
                                  "ecmwf:resolution": ["high"]}},
                   ["datacube"]),
        collection(ds.S2_COLLECTION, "Sentinel-2 MSI Level-2A (sandbox sample)",
                   "Sentinel-2 Level-2A bottom-of-atmosphere reflectance as Cloud-Optimised GeoTIFFs in UTM tiles. "
                   "Synthetic 5 km subsets of two tiles on three dates.",
                   s2_bbox, min(s2_times), max(s2_times), ["Sentinel-2", "Copernicus", "optical", "L2A"],
                   {"summaries": {"eo:bands": [eo_band(b) for b in ds.S2_BANDS], "gsd": [10, 20],
                                  "platform": ["sentinel-2a", "sentinel-2b"], "constellation": ["sentinel-2"],
                                  "instruments": ["msi"], "proj:epsg": [ds.S2_EPSG],
                                  "eo:cloud_cover": {"minimum": 0, "maximum": 100}},
                    "item_assets": {b.name: {"type": COG, "roles": ["data"], "gsd": b.gsd, "eo:bands": [eo_band(b)]}
                                    for b in ds.S2_BANDS}},
                   ["eo", "proj"],
                   providers=[{"name": "ESA", "roles": ["producer", "licensor"], "url": "https://www.esa.int"}]),
        collection(ds.EXTREMES_COLLECTION, "Extremes Digital Twin (sandbox sample, on order)",
                   "Weather-Induced Extremes Digital Twin surface forecasts over Europe. Items are placeholders "
                   "(storage:tier=offline): POST the retrieve link's body to the collection's order endpoint and poll "
                   "the returned item until order:status is succeeded.",
                   extremes_bbox, ds.EXTREMES_DATES[0], extremes_end,
                   ["Destination Earth", "Digital Twin", "Extremes DT", "orderable"],
                   {"summaries": {**summaries_of(ds.EXTREMES_VARIABLES), "ecmwf:levtype": ["sfc"],
                                  "order:status": ["orderable", "ordered", "succeeded", "failed"]}},
                   ["order"]),
    ]  # fmt: skip


# queryables --------------------------------------------------------------------------------------------------------


def _enum(title: str, values) -> dict:
    return {"title": title, "type": "string", "enum": sorted(set(values))}


def queryables() -> dict[str, dict]:
    """Per collection, the JSON schema of the properties a search may filter and sort on."""

    def schema(collection_id: str, properties: dict) -> dict:
        return {"$schema": "https://json-schema.org/draft/2019-09/schema",
                "$id": f"{PREFIX}/collections/{collection_id}/queryables", "type": "object",
                "title": f"Queryables of {collection_id}", "properties": properties,
                "additionalProperties": True}  # fmt: skip

    def ecmwf(variables, extra=None) -> dict:
        return {"ecmwf:param": _enum("ECMWF parameter (shortName)", [v.param for v in variables]),
                "ecmwf:variable": _enum("Variable", [v.variable for v in variables]),
                "ecmwf:param_id": {"title": "ECMWF parameter id", "type": "integer"},
                "ecmwf:levtype": _enum("Level type", ["sfc"]), **(extra or {})}  # fmt: skip

    return {
        ds.ERA5_COLLECTION: schema(ds.ERA5_COLLECTION, ecmwf(ds.ERA5.variables, {
            "ecmwf:resolution": _enum("Grid resolution (degrees)", ["1.0"]),
            "ecmwf:date": {"title": "Date (YYYYMMDD)", "type": "string"}})),
        ds.CLIMATE_DT_COLLECTION: schema(ds.CLIMATE_DT_COLLECTION, ecmwf(ds.CLIMATE_DT.variables, {
            "ecmwf:resolution": _enum("Resolution", ["high"]),
            "ecmwf:experiment": _enum("Experiment", ["SSP3-7.0"]), "ecmwf:model": _enum("Model", ["IFS-NEMO"])})),
        ds.S2_COLLECTION: schema(ds.S2_COLLECTION, {
            "eo:cloud_cover": {"title": "Cloud cover (%)", "type": "number", "minimum": 0, "maximum": 100},
            "platform": _enum("Platform", ["sentinel-2a", "sentinel-2b"]),
            "s2:mgrs_tile": _enum("MGRS tile", [t.mgrs for t in ds.S2_TILES]),
            "sat:relative_orbit": {"title": "Relative orbit", "type": "integer"}}),
        ds.EXTREMES_COLLECTION: schema(ds.EXTREMES_COLLECTION, ecmwf(ds.EXTREMES_VARIABLES, {
            "ecmwf:date": {"title": "Date (YYYYMMDD)", "type": "string"},
            "order:status": _enum("Order status", ["orderable", "ordered", "succeeded", "failed"]),
            "storage:tier": _enum("Storage tier", ["online", "offline"])})),
    }  # fmt: skip
