"""Share links: every visualisation setting ↔ a URL query string, exactly.

    query = encode(settings)             # "source=catalogue&collection=...&bbox=0.0,40.0,20.0,55.0&...&shared=1"
    values, read_only = decode(query)    # {"source": "catalogue", "collection": ..., "bbox": (0.0, 40.0, 20.0, 55.0)}
    apply(settings, values)

Each parameter of `VisualisationSettings` is written (an unset one as an empty value), so the link reproduces the view
whatever the defaults are; floats are written with `repr` and read back with `float`, dates in ISO 8601, so
`decode(encode(s))` gives back exactly `s.values()`. A link carries `shared=1`: the dashboard opens it read-only.
An unknown key or a value the settings refuse raises `ShareLinkError` naming the key.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from collections.abc import Mapping

import param

from .store import VisualisationSettings

SHARED_KEY = "shared"


class ShareLinkError(ValueError):
    """A share link that cannot be read; `key` names the offending setting."""

    def __init__(self, key: str, message: str):
        super().__init__(f"Share link: {key!r}: {message}")
        self.key = key


def setting_names() -> list[str]:
    return [name for name in VisualisationSettings.param if name != "name"]


def _text(parameter: param.Parameter, value) -> str:
    if value is None:
        return ""
    if isinstance(parameter, param.DateRange):
        return "/".join(moment.isoformat() for moment in value)
    if isinstance(parameter, param.Date):
        return value.isoformat()
    if isinstance(parameter, param.NumericTuple):  # bbox, clim (param.Range is a NumericTuple)
        return ",".join(repr(float(number)) for number in value)
    return str(value)


def _value(parameter: param.Parameter, key: str, text: str):
    if text == "":
        return None
    try:
        if isinstance(parameter, param.DateRange):
            start, end = text.split("/")
            return (dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end))
        if isinstance(parameter, param.Date):
            return dt.datetime.fromisoformat(text)
        if isinstance(parameter, param.NumericTuple):
            return tuple(float(number) for number in text.split(","))
    except ValueError:
        kind = ("start/end ISO dates" if isinstance(parameter, param.DateRange)
                else "an ISO date-time" if isinstance(parameter, param.Date) else "comma-separated numbers")
        raise ShareLinkError(key, f"{text!r} is not {kind}") from None
    return text


def encode(settings: VisualisationSettings, shared: bool = True) -> str:
    """The query string (without `?`) of every setting, plus `shared=1` unless `shared` is False."""
    pairs = [(name, _text(settings.param[name], getattr(settings, name))) for name in setting_names()]
    if shared:
        pairs.append((SHARED_KEY, "1"))
    return urllib.parse.urlencode(pairs, safe=",/:")


def decode(query: str | Mapping[str, str]) -> tuple[dict, bool]:
    """(settings values, read_only) from a query string (with or without `?`) or a mapping of strings.

    Values are checked by the settings' own parameters (a bad bbox, projection, colour map, ... is refused).
    """
    if isinstance(query, str):
        pairs = urllib.parse.parse_qsl(query.lstrip("?"), keep_blank_values=True)
    else:
        pairs = [(key, value[-1] if isinstance(value, (list, tuple)) else value) for key, value in query.items()]
    names = setting_names()
    values: dict = {}
    read_only = False
    for key, text in pairs:
        if key == SHARED_KEY:
            read_only = text not in ("", "0", "false")
            continue
        if key not in names:
            raise ShareLinkError(key, f"unknown setting (known: {', '.join(names)}, {SHARED_KEY})")
        if not isinstance(text, str):
            raise ShareLinkError(key, "must be text")
        values[key] = _value(VisualisationSettings.param[key], key, text)
    check = VisualisationSettings()
    for key, value in values.items():
        try:
            setattr(check, key, value)
        except (ValueError, TypeError) as error:
            raise ShareLinkError(key, str(error)) from None
    return values, read_only


def apply(settings: VisualisationSettings, values: Mapping) -> None:
    """Set the decoded values in an order that lets the data store follow (dataset first, then what is in it)."""
    first = {k: v for k, v in values.items() if k in ("source", "collection", "item", "cache_path")}
    settings.param.update(**first)
    settings.param.update(**{k: v for k, v in values.items() if k not in first})


def link(base_url: str, settings: VisualisationSettings) -> str:
    """A full share link: `base_url` (the dashboard's page) with the settings' query."""
    return f"{base_url.split('?')[0]}?{encode(settings)}"
