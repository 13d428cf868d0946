"""Scenario templates: YAML presets of dataset, variable, period, region, colour scale and a short storyline.

    name: era5-europe-cold-start              # file stem by default; what the settings' `template` holds
    title: "ERA5: Europe's 2 m temperature"   # shown in the picker
    dataset: {collection: EO.ECMWF...}        # or {collection: ..., item: ...}, or {cache_path: era5/....zarr}
    variable: t2m
    period: {start: 2024-01-01T00:00:00, end: 2024-01-02T23:00:00, time: 2024-01-01T12:00:00}   # time optional
    region: {name: Europe, bbox: [-25, 34, 45, 72]}                                               # bbox optional
    colour_scale: {cmap: coolwarm, clim: [250, 295]}                                              # clim optional
    projection: EqualEarth                                                                        # optional
    storyline: |
      A few sentences telling the user what to look at.

The shipped ones are in `templates/`; `load_templates()` reads them all. A template with a missing or unknown key,
or a value the settings would refuse, raises `TemplateError` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import yaml

from desp_lab.catalogue import validate_bbox
from desp_lab.errors import InvalidParameter

from .store import CMAPS, PROJECTIONS, VisualisationSettings

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
REQUIRED = ("title", "dataset", "variable", "period", "region", "colour_scale", "storyline")
OPTIONAL = ("name", "projection")


class TemplateError(ValueError):
    """A scenario template that cannot be used; names the file and the key."""

    def __init__(self, source: str, key: str, message: str):
        super().__init__(f"Scenario template {source}: {key}: {message}")
        self.source, self.key = source, key


@dataclasses.dataclass(frozen=True)
class ScenarioTemplate:
    name: str
    title: str
    variable: str
    start: dt.datetime
    end: dt.datetime
    region: str
    storyline: str
    cmap: str
    collection: str | None = None
    item: str | None = None
    cache_path: str | None = None
    time: dt.datetime | None = None
    bbox: tuple[float, float, float, float] | None = None
    clim: tuple[float, float] | None = None
    projection: str | None = None

    def settings_values(self) -> dict:
        """The settings this template sets (every dataset, time, area and colour setting)."""
        return {
            "source": "cache" if self.cache_path else "catalogue", "collection": self.collection, "item": self.item,
            "cache_path": self.cache_path, "variable": self.variable, "time": self.time or self.start,
            "time_range": (self.start, self.end), "bbox": self.bbox, "cmap": self.cmap, "clim": self.clim,
            **({"projection": self.projection} if self.projection else {}), "template": self.name,
        }

    def apply(self, settings: VisualisationSettings) -> None:
        """Set the template's choices on `settings` (dataset first, so a store watching them follows)."""
        from .share import apply

        apply(settings, self.settings_values())


def _moment(source: str, key: str, value) -> dt.datetime:
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise TemplateError(source, key, f"{value!r} is not an ISO 8601 date-time") from None
    else:
        raise TemplateError(source, key, "must be an ISO 8601 date-time such as 2024-01-01T00:00:00")
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment


def _mapping(source: str, key: str, value, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
    if not isinstance(value, dict):
        raise TemplateError(source, key, f"must be a mapping with {', '.join(allowed)}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise TemplateError(source, f"{key}.{unknown[0]}", f"unknown key (allowed: {', '.join(allowed)})")
    for name in required:
        if value.get(name) in (None, ""):
            raise TemplateError(source, f"{key}.{name}", "is required")
    return value


def _text(source: str, key: str, value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TemplateError(source, key, "must be non-empty text")
    return value.strip()


def parse_template(data, source: str = "<template>", default_name: str | None = None) -> ScenarioTemplate:
    """A ScenarioTemplate from parsed YAML, every key checked."""
    if not isinstance(data, dict):
        raise TemplateError(source, "(top level)", "must be a mapping of " + ", ".join(REQUIRED))
    unknown = sorted(set(data) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise TemplateError(source, unknown[0], f"unknown key (allowed: {', '.join(REQUIRED + OPTIONAL)})")
    for key in REQUIRED:
        if key not in data:
            raise TemplateError(source, key, "is required")
    name = _text(source, "name", data.get("name", default_name))
    dataset = _mapping(source, "dataset", data["dataset"], ("collection", "item", "cache_path"))
    if bool(dataset.get("collection")) == bool(dataset.get("cache_path")):
        raise TemplateError(source, "dataset", "give either collection (and optionally item) or cache_path")
    if dataset.get("item") and not dataset.get("collection"):
        raise TemplateError(source, "dataset.item", "needs a collection")
    period = _mapping(source, "period", data["period"], ("start", "end", "time"), ("start", "end"))
    start, end = _moment(source, "period.start", period["start"]), _moment(source, "period.end", period["end"])
    if start > end:
        raise TemplateError(source, "period", f"start {start} is after end {end}")
    time = _moment(source, "period.time", period["time"]) if period.get("time") is not None else None
    if time is not None and not start <= time <= end:
        raise TemplateError(source, "period.time", f"{time} is outside the period {start} – {end}")
    region = _mapping(source, "region", data["region"], ("name", "bbox"), ("name",))
    bbox = None
    if region.get("bbox") is not None:
        try:
            bbox = tuple(validate_bbox(region["bbox"]))
        except InvalidParameter as error:
            raise TemplateError(source, "region.bbox", str(error)) from None
        if len(bbox) != 4:
            raise TemplateError(source, "region.bbox", "must be west, south, east, north")
    scale = _mapping(source, "colour_scale", data["colour_scale"], ("cmap", "clim"), ("cmap",))
    if scale["cmap"] not in CMAPS:
        raise TemplateError(source, "colour_scale.cmap", f"{scale['cmap']!r} is not one of {', '.join(CMAPS)}")
    clim = scale.get("clim")
    if clim is not None:
        if (not isinstance(clim, (list, tuple)) or len(clim) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in clim)):
            raise TemplateError(source, "colour_scale.clim", "must be two numbers [low, high]")
        if clim[0] >= clim[1]:
            raise TemplateError(source, "colour_scale.clim", "low must be below high")
        clim = (float(clim[0]), float(clim[1]))
    projection = data.get("projection")
    if projection is not None and projection not in PROJECTIONS:
        raise TemplateError(source, "projection", f"{projection!r} is not one of {', '.join(PROJECTIONS)}")
    return ScenarioTemplate(
        name=name, title=_text(source, "title", data["title"]), variable=_text(source, "variable", data["variable"]),
        start=start, end=end, time=time, region=_text(source, "region.name", region["name"]), bbox=bbox,
        storyline=_text(source, "storyline", data["storyline"]), cmap=scale["cmap"], clim=clim,
        collection=dataset.get("collection"), item=dataset.get("item"), cache_path=dataset.get("cache_path"),
        projection=projection,
    )


def load_template(path: str | Path) -> ScenarioTemplate:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise TemplateError(path.name, "(yaml)", " ".join(str(error).split())) from None
    return parse_template(data, source=path.name, default_name=path.stem)


def load_templates(directory: str | Path | None = None) -> dict[str, ScenarioTemplate]:
    """Every `*.yaml` template in `directory` (default the shipped ones), by name, in file-name order."""
    templates: dict[str, ScenarioTemplate] = {}
    for path in sorted(Path(directory or TEMPLATES_DIR).glob("*.yaml")):
        template = load_template(path)
        if template.name in templates:
            raise TemplateError(path.name, "name", f"{template.name!r} is used by another template too")
        templates[template.name] = template
    return templates
