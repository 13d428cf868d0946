"""Share links (settings ↔ query string) and scenario templates (YAML presets)."""

import datetime as dt
import textwrap

import pytest

from desp_dashboards.visualisation import scenarios, share
from desp_dashboards.visualisation.store import DataStore, VisualisationSettings
from tests.dashboards.test_visualisation_store import CLIMATE_DT, ERA5, context  # noqa: F401  (fixture)


def full_settings() -> VisualisationSettings:
    return VisualisationSettings(
        source="catalogue", collection=ERA5, item="ERA5_SL_2T_20240101", variable="t2m",
        time=dt.datetime(2024, 1, 1, 6, 30, 15, 250), time_range=(dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2, 23)),
        bbox=(-10.123456789, 35.5, 30.000000001, 60.25), projection="Orthographic", cmap="RdBu_r",
        clim=(250.1, 299.987654321), template="era5-europe-cold-start",
    )


def test_round_trip_is_exact():
    settings = full_settings()
    query = share.encode(settings)
    values, read_only = share.decode(query)
    assert values == settings.values()
    assert read_only
    assert share.decode("?" + query)[0] == values
    restored = VisualisationSettings()
    share.apply(restored, values)
    assert restored.values() == settings.values()
    # And again from the restored settings: the same link.
    assert share.encode(restored) == query


def test_unset_settings_round_trip_and_not_shared():
    settings = VisualisationSettings(cache_path="era5/x.zarr", source="cache")
    query = share.encode(settings, shared=False)
    values, read_only = share.decode(query)
    assert values == settings.values() and values["bbox"] is None and values["time"] is None
    assert not read_only


def test_link_keeps_the_page():
    url = share.link("http://127.0.0.1:8000/services/dashboards/visualisation?old=1", full_settings())
    assert url.startswith("http://127.0.0.1:8000/services/dashboards/visualisation?source=catalogue&")
    assert url.endswith("&shared=1")


@pytest.mark.parametrize(("query", "key", "words"), [
    ("colour=red", "colour", "unknown setting"),
    ("bbox=1,2,3", "bbox", "bbox"),
    ("bbox=0,60,10,50", "bbox", "south"),
    ("bbox=a,b,c,d", "bbox", "comma-separated numbers"),
    ("time=yesterday", "time", "ISO date-time"),
    ("time_range=2024-01-02T00:00:00", "time_range", "start/end"),
    ("projection=Flat", "projection", "Flat"),
    ("cmap=nope", "cmap", "nope"),
    ("source=ftp", "source", "ftp"),
    ("clim=1", "clim", "clim"),
])
def test_bad_links_name_the_key(query, key, words):
    with pytest.raises(share.ShareLinkError) as caught:
        share.decode(query)
    assert caught.value.key == key
    assert key in str(caught.value) and words in str(caught.value)


def test_shipped_templates_load_and_use_the_sandbox_products():
    templates = scenarios.load_templates()
    assert len(templates) >= 2
    collections = {t.collection for t in templates.values()}
    assert {ERA5, CLIMATE_DT} <= collections
    for template in templates.values():
        assert template.storyline and template.title and template.cmap
        assert template.start <= template.end


def test_template_applies_to_settings_and_the_store(context):  # noqa: F811
    templates = scenarios.load_templates()
    store = DataStore(context)
    templates["era5-europe-cold-start"].apply(store.settings)
    s = store.settings
    assert (s.collection, s.item, s.variable) == (ERA5, None, "t2m")
    assert s.bbox == (-25.0, 34.0, 45.0, 72.0) and s.clim == (250.0, 295.0) and s.cmap == "coolwarm"
    assert s.time == dt.datetime(2024, 1, 1, 12) and s.time_range[1] == dt.datetime(2024, 1, 2, 23)
    assert s.projection == "EqualEarth" and s.template == "era5-europe-cold-start"
    assert store.field().sizes == {"latitude": 39, "longitude": 71}
    assert store.period().sizes["time"] == 48
    templates["climate-dt-ssp370-wind"].apply(store.settings)
    assert store.settings.variable == "u10" and store.variables == ["u10"]
    assert store.period().sizes["time"] == 24
    assert store.error == ""


def write(tmp_path, text, name="t.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


VALID = textwrap.dedent("""\
    title: T
    dataset: {collection: C}
    variable: t2m
    period: {start: 2024-01-01T00:00:00, end: 2024-01-02T00:00:00}
    region: {name: R, bbox: [0, 40, 20, 55]}
    colour_scale: {cmap: viridis}
    storyline: S
""")


@pytest.mark.parametrize(("change", "key", "words"), [
    (("variable: t2m", "variable: t2m\ncolor: red"), "color", "unknown key"),
    (("storyline: S", ""), "storyline", "required"),
    (("{cmap: viridis}", "{cmap: rainbowish}"), "colour_scale.cmap", "rainbowish"),
    (("{cmap: viridis}", "{cmap: viridis, clim: [5, 1]}"), "colour_scale.clim", "below"),
    (("[0, 40, 20, 55]", "[0, 40, 20]"), "region.bbox", "4 or 6"),
    (("[0, 40, 20, 55]", "[0, 60, 20, 55]"), "region.bbox", "south"),
    (("end: 2024-01-02T00:00:00", "end: 2023-01-02T00:00:00"), "period", "after"),
    (("start: 2024-01-01T00:00:00", "start: soon"), "period.start", "ISO 8601"),
    (("{collection: C}", "{collection: C, cache_path: x.zarr}"), "dataset", "either"),
    (("variable: t2m", "variable: t2m\nprojection: Flat"), "projection", "Flat"),
    (("title: T", "title: [unclosed"), "(yaml)", ""),
])
def test_bad_templates_are_refused_clearly(tmp_path, change, key, words):
    assert scenarios.load_template(write(tmp_path, VALID)).name == "t"
    path = write(tmp_path, VALID.replace(*change), name="bad.yaml")
    with pytest.raises(scenarios.TemplateError) as caught:
        scenarios.load_template(path)
    assert caught.value.key == key and "bad.yaml" in str(caught.value) and words in str(caught.value)


def test_duplicate_template_names_are_refused(tmp_path):
    write(tmp_path, "name: same\n" + VALID, name="a.yaml")
    write(tmp_path, "name: same\n" + VALID, name="b.yaml")
    with pytest.raises(scenarios.TemplateError, match="used by another"):
        scenarios.load_templates(tmp_path)
