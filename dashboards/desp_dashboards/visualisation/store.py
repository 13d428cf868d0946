"""The visualisation dashboard's model: what the user chose (`VisualisationSettings`) and the data it selects
(`DataStore`), with no widgets and no plotting, so both are tested without a server.

Data comes through `desp_lab` only: gridded collections and their items from the catalogue
(`desp_lab.catalogue.Catalogue(context.catalogue_url, token=context.user_token)`), or a Zarr store in the user's cache
(`desp_lab.cache.Cache`). Datasets open lazily (Dask) and are kept per (source, collection, item, path), so changing
the time, the area or the colour scale reads only the chunks that are shown.

Every dataset is normalised to dims `(time, latitude, longitude)`: latitude ascending, longitude in -180..180
ascending, whatever the product's own order (ERA5: 90→-90 and 0→359; Climate DT: -90→90 and -180→179).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

import numpy as np
import pandas as pd
import param

from desp_lab.catalogue import validate_bbox
from desp_lab.errors import DespError, InvalidParameter

#: Projection names offered on the map (cartopy classes; Orthographic is centred on the area of interest).
PROJECTIONS = ("PlateCarree", "Robinson", "Mollweide", "EqualEarth", "Orthographic", "Mercator", "NearsidePerspective")
#: Colour maps offered (matplotlib/colorcet names that bokeh and matplotlib both know).
CMAPS = ("viridis", "plasma", "inferno", "magma", "cividis", "coolwarm", "RdBu_r", "Spectral_r", "YlGnBu", "Blues",
         "Reds", "turbo", "fire", "kbc")
SOURCES = ("catalogue", "cache")
LAT_NAMES = ("latitude", "lat", "y")
LON_NAMES = ("longitude", "lon", "x")


class BBox(param.NumericTuple):
    """An area of interest: (west, south, east, north) in degrees, checked like the catalogue's bbox, or None."""

    def __init__(self, default=None, **params):
        params.setdefault("allow_None", True)
        super().__init__(default=default, length=4, **params)

    def _validate_value(self, value, allow_None):
        super()._validate_value(value, allow_None)
        if value is not None:
            try:
                validate_bbox(list(value))
            except InvalidParameter as error:
                raise ValueError(f"bbox: {error}") from None


class VisualisationSettings(param.Parameterized):
    """Everything that defines a view: the share link encodes exactly these parameters."""

    source = param.Selector(objects=list(SOURCES), default="catalogue", doc="Catalogue collection or cache dataset")
    collection = param.Selector(objects=[], default=None, allow_None=True, check_on_set=False,
                                doc="Catalogue collection id")
    item = param.Selector(objects=[], default=None, allow_None=True, check_on_set=False,
                          doc="Item id within the collection (none: every item of the collection)")
    cache_path = param.String(default=None, allow_None=True, doc="A Zarr store in your cache area (relative path)")
    variable = param.Selector(objects=[], default=None, allow_None=True, check_on_set=False, doc="Variable shown")
    time = param.Date(default=None, allow_None=True, doc="Time step on the map (nearest available; UTC)")
    time_range = param.DateRange(default=None, allow_None=True,
                                 doc="Period of the time series and the exports (none: the shown time step only)")
    bbox = BBox(doc="Area of interest: west, south, east, north (degrees); none for the whole globe")
    projection = param.Selector(objects=list(PROJECTIONS), default="PlateCarree", doc="Map projection")
    cmap = param.Selector(objects=list(CMAPS), default="viridis", doc="Colour map")
    clim = param.Range(default=None, allow_None=True, doc="Colour range (none: the data's range)")
    template = param.Selector(objects=[], default=None, allow_None=True, check_on_set=False,
                              doc="Scenario template these settings started from")

    def values(self) -> dict:
        """The settings as a plain dict (parameter name → value), without param's `name`."""
        return {name: getattr(self, name) for name in self.param if name != "name"}


def _naive_utc(moment) -> dt.datetime | None:
    """A datetime without tzinfo, in UTC (what param.Date and the datasets' datetime64 coordinates hold)."""
    if moment is None:
        return None
    stamp = pd.Timestamp(moment)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.to_pydatetime()


def normalise(dataset):
    """`dataset` with dims named time/latitude/longitude, latitude and longitude ascending, longitude in -180..180."""
    renames = {}
    for names, target in ((LAT_NAMES, "latitude"), (LON_NAMES, "longitude")):
        found = next((name for name in names if name in dataset.dims), None)
        if found is None:
            raise DespError(f"This dataset is not on a latitude/longitude grid (no {target} dimension; it has "
                            f"{', '.join(map(str, dataset.dims))}).", status=400)
        if found != target:
            renames[found] = target
    times = [name for name in dataset.dims if name in dataset.coords
             and np.issubdtype(dataset[name].dtype, np.datetime64)]
    if times and times[0] != "time":
        if "time" in dataset.variables:  # e.g. a scalar reference time beside valid_time
            dataset = dataset.drop_vars("time")
        renames[times[0]] = "time"
    dataset = dataset.rename(renames) if renames else dataset
    longitude = dataset["longitude"]
    if float(longitude.max()) > 180:
        dataset = dataset.assign_coords(longitude=((longitude + 180) % 360) - 180)
    if not dataset.indexes["longitude"].is_monotonic_increasing:
        dataset = dataset.sortby("longitude")
    if not dataset.indexes["latitude"].is_monotonic_increasing:
        dataset = dataset.sortby("latitude")
    return dataset


def select_bbox(array, bbox):
    """The part of a normalised array inside bbox (west > east: a box across the antimeridian)."""
    if bbox is None:
        return array
    west, south, east, north = bbox
    array = array.sel(latitude=slice(south, north))
    if west <= east:
        return array.sel(longitude=slice(west, east))
    longitude = array["longitude"].values
    return array.isel(longitude=np.flatnonzero((longitude >= west) | (longitude <= east)))


def coarsen(array, factor: int = 1, grid: float | None = None):
    """`array` at a coarser resolution: block means of `factor` x `factor` cells (incomplete edge blocks dropped),
    or interpolated (linear) onto a regular `grid` of that many degrees over the same extent."""
    if grid is not None:
        if not grid > 0:
            raise InvalidParameter("grid", "must be a positive number of degrees")
        lat, lon = array["latitude"].values, array["longitude"].values
        new_lat = np.arange(lat.min(), lat.max() + grid / 2, grid)
        new_lon = np.arange(lon.min(), lon.max() + grid / 2, grid)
        return array.interp(latitude=new_lat, longitude=new_lon, method="linear")
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise InvalidParameter("factor", "must be a whole number of at least 1")
    if factor == 1:
        return array
    coarse = array.coarsen(latitude=factor, longitude=factor, boundary="trim").mean()
    coarse.attrs.update(array.attrs)
    return coarse


class DataStore(param.Parameterized):
    """Loads what the settings name, caches it, and offers the selections the views and exports show.

    `context`: a `DashboardContext` (catalogue and cache URLs, the user's token). `catalogue`/`cache` may be given
    (tests, other clients); by default they are made from the context on first use.
    """

    settings = param.ClassSelector(class_=VisualisationSettings, doc="What the user chose")
    collections = param.List(default=[], doc="Gridded (lat/lon datacube) collections of the catalogue")
    items = param.List(default=[], doc="Items of the chosen collection")
    variables = param.List(default=[], doc="Variables of the open dataset")
    times = param.List(default=[], doc="Time steps of the open dataset")
    error = param.String(default="", doc="Why the last load failed (empty when it worked)")

    def __init__(self, context=None, settings: VisualisationSettings | None = None, catalogue=None, cache=None,
                 **params):
        super().__init__(settings=settings or VisualisationSettings(), **params)
        self.context = context
        self._catalogue = catalogue
        self._cache = cache
        self._datasets: dict[tuple, object] = {}
        self._item_lists: dict[str, list[str]] = {}
        self._lock = threading.RLock()
        self.settings.param.watch(self._source_changed, ["source", "collection", "item", "cache_path"])

    # -- clients ------------------------------------------------------------------------------------------------

    def _token(self) -> Callable[[], str] | None:
        return getattr(self.context, "user_token", None)

    @property
    def catalogue(self):
        if self._catalogue is None:
            from desp_lab.catalogue import Catalogue

            self._catalogue = Catalogue(getattr(self.context, "catalogue_url", None) or None, token=self._token())
        return self._catalogue

    @property
    def cache(self):
        if self._cache is None:
            from desp_lab.cache import Cache

            self._cache = Cache(getattr(self.context, "cache_url", None) or None, token=self._token())
        return self._cache

    # -- discovery ------------------------------------------------------------------------------------------------

    def load_collections(self) -> list[str]:
        """Ids of the catalogue's collections that are lat/lon datacubes (they can be drawn on the map)."""
        found = []
        for collection in self.catalogue.collections():
            dims = collection.extra_fields.get("cube:dimensions") or {}
            axes = {d.get("axis") for d in dims.values() if d.get("type") == "spatial"}
            if {"x", "y"} <= axes:
                found.append(collection.id)
        self.collections = found
        self.settings.param.collection.objects = found
        return found

    def load_items(self, collection: str) -> list[str]:
        """Ids of a collection's items (cached per collection)."""
        with self._lock:
            if collection not in self._item_lists:
                self._item_lists[collection] = self.catalogue.search(collections=[collection]).ids
            return list(self._item_lists[collection])

    def _source_changed(self, *events) -> None:
        names = {event.name for event in events}
        if "collection" in names and self.settings.source == "catalogue" and self.settings.collection:
            try:
                self.items = self.load_items(self.settings.collection)
            except DespError as error:
                self.error = str(error)
                return
            self.settings.param.item.objects = self.items
            if self.settings.item is not None and self.settings.item not in self.items:
                self.settings.item = None
        self.refresh()

    def refresh(self) -> None:
        """Open the chosen dataset (if any) and offer its variables and time steps; keeps the variable and time
        when the new dataset has them, else picks the first of each."""
        try:
            dataset = self.dataset()
        except DespError as error:
            self.error = str(error)
            return
        if dataset is None:
            return
        self.error = ""
        variables = [name for name, variable in dataset.data_vars.items()
                     if {"latitude", "longitude"} <= set(variable.dims)]
        times = [_naive_utc(t) for t in dataset["time"].values] if "time" in dataset.dims else []
        self.variables, self.times = variables, times
        settings = self.settings
        settings.param.variable.objects = variables
        updates = {}
        if settings.variable not in variables:
            updates["variable"] = variables[0] if variables else None
        if times and (settings.time is None or not times[0] <= settings.time <= times[-1]):
            updates["time"] = times[0]
        if updates:
            settings.param.update(**updates)

    # -- loading --------------------------------------------------------------------------------------------------

    def _key(self) -> tuple | None:
        s = self.settings
        if s.source == "cache":
            return ("cache", s.cache_path) if s.cache_path else None
        return ("catalogue", s.collection, s.item) if s.collection else None

    def dataset(self):
        """The chosen dataset (lazy, normalised), or None when nothing is chosen yet; cached per choice."""
        key = self._key()
        if key is None:
            return None
        with self._lock:
            if key not in self._datasets:
                self._datasets[key] = normalise(self._open(key))
            return self._datasets[key]

    def _open(self, key: tuple):
        if key[0] == "cache":
            return self.cache.open_zarr(key[1])
        _, collection, item = key
        if item:
            return self.catalogue.open_item(collection, item)
        return self.catalogue.search(collections=[collection]).to_xarray()

    # -- selections -----------------------------------------------------------------------------------------------

    def data_array(self):
        """The chosen variable over the area of interest, every time step (lazy)."""
        dataset = self.dataset()
        if dataset is None:
            raise DespError("Choose a collection (or a dataset in your cache) first.", status=400)
        variable = self.settings.variable
        if variable not in dataset.data_vars:
            raise DespError(f"The dataset has no variable {variable!r} (it has "
                            f"{', '.join(map(str, dataset.data_vars))}).", field="variable", status=400)
        return select_bbox(dataset[variable], self.settings.bbox)

    def shown_time(self) -> dt.datetime | None:
        """The time step on the map: the one nearest the chosen time (the first if none is chosen)."""
        array = self.data_array()
        if "time" not in array.dims:
            return None
        if self.settings.time is None:
            return _naive_utc(array["time"].values[0])
        return _naive_utc(array["time"].sel(time=np.datetime64(self.settings.time), method="nearest").values)

    def field(self):
        """The 2-D field on the map: the chosen variable at the shown time step over the area of interest."""
        array = self.data_array()
        if "time" in array.dims:
            array = array.sel(time=np.datetime64(self.shown_time()))
        return array

    def period(self):
        """The chosen variable over the period: the time range if one is chosen, else the shown time step."""
        array = self.data_array()
        if "time" not in array.dims:
            return array
        if self.settings.time_range is not None:
            start, end = self.settings.time_range
            return array.sel(time=slice(np.datetime64(_naive_utc(start)), np.datetime64(_naive_utc(end))))
        return array.sel(time=[np.datetime64(self.shown_time())])

    def series(self, longitude: float, latitude: float):
        """The time series at the grid point nearest (longitude, latitude), over the time range (else all times)."""
        dataset = self.dataset()
        array = dataset[self.settings.variable]
        longitude = ((float(longitude) + 180) % 360) - 180
        point = array.sel(longitude=longitude, latitude=float(latitude), method="nearest")
        if "time" in point.dims and self.settings.time_range is not None:
            start, end = self.settings.time_range
            point = point.sel(time=slice(np.datetime64(_naive_utc(start)), np.datetime64(_naive_utc(end))))
        return point

    def subset(self, factor: int = 1, grid: float | None = None):
        """What the exports write: `period()` at the chosen resolution, computed, as a Dataset of one variable."""
        array = coarsen(self.period(), factor=factor, grid=grid).compute()
        dataset = array.to_dataset(name=self.settings.variable)
        dataset.attrs.update({
            "title": f"{self.settings.variable} from {self.describe()}",
            "source": "DESP visualisation dashboard",
            "bbox": list(self.settings.bbox) if self.settings.bbox else [-180.0, -90.0, 180.0, 90.0],
        })
        return dataset

    def describe(self) -> str:
        s = self.settings
        if s.source == "cache":
            return f"cache:{s.cache_path}"
        return f"{s.collection}/{s.item}" if s.item else str(s.collection)
