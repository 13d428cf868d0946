"""Coastlines and borders come from the Natural Earth 110m files shipped in desp_dashboards, with no network."""

import socket
import urllib.request

import cartopy
import cartopy.io
import pytest
import shapely
from cartopy.feature import NaturalEarthFeature
from cartopy.io import shapereader

import desp_dashboards
from desp_dashboards.natural_earth import DATA_DIR, LAYERS, shapefile_path


@pytest.fixture
def no_network(monkeypatch):
    """Every way cartopy could download fails loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:1]}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(cartopy.io, "urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    saved = {key: cartopy.config[key] for key in ("pre_existing_data_dir", "data_dir")}
    yield
    cartopy.config.update(saved)


def test_offline_maps_points_cartopy_at_the_shipped_files(no_network, monkeypatch):
    monkeypatch.delenv("CARTOPY_DATA_DIR", raising=False)
    directory = desp_dashboards.offline_maps()
    assert directory == DATA_DIR
    assert cartopy.config["pre_existing_data_dir"] == DATA_DIR
    import os

    assert os.environ["CARTOPY_DATA_DIR"] == str(DATA_DIR)
    for category, name in LAYERS:
        path = shapereader.natural_earth(resolution="110m", category=category, name=name)
        assert path == shapefile_path(category, name)
        for suffix in (".shp", ".shx", ".dbf", ".prj"):
            assert path.with_suffix(suffix).exists()


@pytest.mark.parametrize(("category", "name", "least", "far_west"), [
    ("physical", "coastline", 100, -179.9),  # Russia's Chukotka and Fiji reach the antimeridian
    ("cultural", "admin_0_boundary_lines_land", 150, -140.5),  # the Alaska/Canada border is the westernmost
])
def test_features_load_without_network(no_network, category, name, least, far_west):
    desp_dashboards.offline_maps()
    geometries = list(NaturalEarthFeature(category, name, "110m").geometries())
    assert len(geometries) >= least
    assert all(isinstance(g, (shapely.LineString, shapely.MultiLineString)) for g in geometries)
    west, south, east, north = shapely.GeometryCollection(geometries).bounds
    assert -180 <= west <= far_west and 140 < east <= 180
    assert south >= -90 and north <= 90
    # No line jumps across the map (the source is spherical; lines are cut at the antimeridian).
    for geometry in geometries:
        for line in getattr(geometry, "geoms", [geometry]):
            xs = [x for x, _ in line.coords]
            assert max(abs(b - a) for a, b in zip(xs, xs[1:])) < 180


def test_known_places(no_network):
    """The coast passes near Gibraltar and a border near Basel (France/Switzerland/Germany)."""
    desp_dashboards.offline_maps()
    coast = shapely.union_all(list(NaturalEarthFeature("physical", "coastline", "110m").geometries()))
    borders = shapely.union_all(list(NaturalEarthFeature("cultural", "admin_0_boundary_lines_land",
                                                         "110m").geometries()))
    assert coast.distance(shapely.Point(-5.35, 36.14)) < 1.0
    assert borders.distance(shapely.Point(7.59, 47.56)) < 1.0
    assert borders.distance(shapely.Point(-30.0, 40.0)) > 5.0  # mid-Atlantic: no border
