"""Regenerate the shipped Natural Earth 110m shapefiles from the npm package `world-atlas` (TopoJSON).

    cd "$(mktemp -d)" && npm pack world-atlas@2.0.2 && tar xzf world-atlas-2.0.2.tgz
    python dashboards/desp_dashboards/natural_earth/make_shapefiles.py package/

`world-atlas` redistributes Natural Earth 4.1.0 (public domain) as quantised TopoJSON: `land-110m.json` (object
`land`: the 1:110m land polygons) and `countries-110m.json` (object `countries`: the 1:110m admin-0 countries, sharing
arcs where two countries meet). From them, written in cartopy's directory layout under `shapefiles/natural_earth/`:

- `physical/ne_110m_coastline`: the outlines of the land polygons (every ring);
- `cultural/ne_110m_admin_0_boundary_lines_land`: every arc shared by two different countries (a land border).

TopoJSON from world-atlas 2 is spherical (rings are not cut at the antimeridian), so a line is cut where a segment
crosses ±180° of longitude, giving planar pieces as Natural Earth's own shapefiles have.

Run once by hand; the output is committed, so nothing is downloaded when the dashboards run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import shapefile  # pyshp

HERE = Path(__file__).resolve().parent
OUT = HERE / "shapefiles" / "natural_earth"
WGS84_PRJ = (
    'GEOGCS["GCS_WGS_1984",DATUM["D_WGS_1984",SPHEROID["WGS_1984",6378137.0,298.257223563]],'
    'PRIMEM["Greenwich",0.0],UNIT["Degree",0.0174532925199433]]'
)
EDGE = 1e-6  # degrees: a segment this close to the map edge lies along it


def decode_arcs(topology: dict) -> list[list[tuple[float, float]]]:
    """The topology's arcs as lists of (lon, lat), undoing the quantisation and delta encoding."""
    (sx, sy), (tx, ty) = topology["transform"]["scale"], topology["transform"]["translate"]
    arcs = []
    for arc in topology["arcs"]:
        x = y = 0
        points = []
        for dx, dy in arc:
            x += dx
            y += dy
            points.append((round(x * sx + tx, 6), round(y * sy + ty, 6)))
        arcs.append(points)
    return arcs


def arc_points(arcs, index: int) -> list[tuple[float, float]]:
    """Arc `index` (a negative index ~i is arc i reversed)."""
    return list(reversed(arcs[~index])) if index < 0 else arcs[index]


def ring_points(arcs, ring: list[int]) -> list[tuple[float, float]]:
    points: list[tuple[float, float]] = []
    for index in ring:
        part = arc_points(arcs, index)
        points.extend(part[1:] if points else part)  # consecutive arcs share their joining point
    return points


def polygons(geometry: dict) -> list[list[list[int]]]:
    if geometry["type"] == "Polygon":
        return [geometry["arcs"]]
    if geometry["type"] == "MultiPolygon":
        return geometry["arcs"]
    return []


def crossing(a, b) -> tuple[float, float, float]:
    """Where segment a-b, which jumps across the antimeridian, meets it: (lon on a's side, lat, lon on b's side)."""
    side = 180.0 if a[0] > 0 else -180.0
    bx = b[0] + (360.0 if side > 0 else -360.0)  # b moved next to a
    t = (side - a[0]) / (bx - a[0]) if bx != a[0] else 0.0
    return side, round(a[1] + t * (b[1] - a[1]), 6), -side


def split_at_antimeridian(points) -> list[list[tuple[float, float]]]:
    """A line in spherical lon/lat (world-atlas does not cut at ±180) as planar pieces that each stay on one side:
    a segment jumping more than 180° of longitude is cut where it crosses the antimeridian."""
    lines, current = [], [points[0]]
    for a, b in zip(points, points[1:]):
        if abs(b[0] - a[0]) > 180:
            here, lat, there = crossing(a, b)
            if a[0] != here:
                current.append((here, lat))
            if len(current) > 1:
                lines.append(current)
            current = [(there, lat)] if b[0] != there else []
        current.append(b)
    if len(current) > 1:
        lines.append(current)
    return lines


def write(path: Path, shape_type: int, fields: list[tuple], records: list[tuple[list, list]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with shapefile.Writer(str(path), shapeType=shape_type, encoding="utf-8") as writer:
        for field in fields:
            writer.field(*field)
        for parts, values in records:
            writer.line(parts)
            writer.record(*values)
    path.with_suffix(".prj").write_text(WGS84_PRJ)
    path.with_suffix(".cpg").write_text("UTF-8")


def main(package_dir: str) -> None:
    source = Path(package_dir)
    land = json.loads((source / "land-110m.json").read_text())
    countries = json.loads((source / "countries-110m.json").read_text())

    land_arcs = decode_arcs(land)
    coast_lines = []
    for geometry in land["objects"]["land"]["geometries"]:
        for polygon in polygons(geometry):
            for ring in polygon:
                coast_lines.extend(split_at_antimeridian(ring_points(land_arcs, ring)))

    country_arcs = decode_arcs(countries)
    users: dict[int, set[str]] = {}
    for number, geometry in enumerate(countries["objects"]["countries"]["geometries"]):
        name = geometry.get("id") or geometry.get("properties", {}).get("name") or str(number)
        for polygon in polygons(geometry):
            for ring in polygon:
                for index in ring:
                    users.setdefault(index if index >= 0 else ~index, set()).add(name)
    borders = [line for index in sorted(users) if len(users[index]) >= 2
               for line in split_at_antimeridian(country_arcs[index])]

    physical, cultural = OUT / "physical", OUT / "cultural"
    write(physical / "ne_110m_coastline.shp", shapefile.POLYLINE,
          [("featurecla", "C", 32), ("scalerank", "N", 4, 0), ("min_zoom", "N", 6, 1)],
          [([line], ["Coastline", 0, 0.0]) for line in coast_lines])
    write(cultural / "ne_110m_admin_0_boundary_lines_land.shp", shapefile.POLYLINE,
          [("featurecla", "C", 32), ("scalerank", "N", 4, 0), ("min_zoom", "N", 6, 1)],
          [([line], ["International boundary (verify)", 0, 0.0]) for line in borders])
    print(f"coastline: {len(coast_lines)} lines, borders: {len(borders)} lines → {OUT}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
