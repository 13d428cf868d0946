"""Dashboards: how long the visualisation map takes to re-render after a pan or zoom, with datashader (as the
dashboard does it) against the same plot sent to the browser without datashader, in one run.

1. A 4096 x 8192 float32 global field (128 MiB) as a GeoViews image (PlateCarree). With datashader: the dashboard's
   `rasterize` operation re-run for each interaction (global view, a zoom on Europe, a pan east, a deep zoom), at a
   plot size of 900 x 450 pixels, then turned into the bokeh figure and serialised to the document JSON that is sent
   to the browser. Without datashader: the whole image turned into a bokeh figure and serialised (what every
   interaction would have to ship if the browser did the rendering; capped at --cap-cells cells and scaled up
   linearly beyond it when the full field would not fit in time or memory).
2. 100 million points (float32 x, y; datashader's points aggregate, `rasterize` of an `hv.Points`), re-rendered for
   the same kind of interactions. Without datashader: a bokeh scatter of --cap-points points, serialised, and
   scaled up linearly to 100 million (labelled "extrapolated": no browser could take the real thing).

Target: a re-render (rasterize + figure + serialisation, server side) <= 1 s. Ratios are "without / with".
The time to first render in Chromium and the memory per extra browser session are measured by the browser tests of
the served dashboards (SERVE's tests/browser/test_dashboards.py), not here: this script needs no server or browser.

Run: `.venv/bin/python benchmarks/dashboards.py [--repeat N] [--points N] [--cap-cells N] [--cap-points N]`.
"""

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

TARGET_SECONDS = 1.0
PLOT_WIDTH, PLOT_HEIGHT = 900, 450
# (name, x_range, y_range) in degrees: what a user does on the map.
INTERACTIONS = [
    ("global view", (-180.0, 180.0), (-90.0, 90.0)),
    ("zoom on Europe", (-25.0, 45.0), (34.0, 72.0)),
    ("pan east", (5.0, 75.0), (34.0, 72.0)),
    ("deep zoom (Alps)", (5.0, 15.0), (43.0, 48.0)),
]


def median_seconds(function, repeat):
    times = []
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def to_browser(element, **opts) -> int:
    """What the server does before a plot reaches the browser: the bokeh figure serialised to JSON (arrays
    base64-encoded, as in a standalone document); returns the bytes sent."""
    import json

    import holoviews as hv
    from bokeh.embed import json_item

    figure = hv.render(element.opts(**opts, backend="bokeh") if opts else element, backend="bokeh")
    return len(json.dumps(json_item(figure)))


def global_field(n_lat=4096, n_lon=8192):
    import xarray as xr

    lat = np.linspace(-90 + 90 / n_lat, 90 - 90 / n_lat, n_lat)
    lon = np.linspace(-180 + 180 / n_lon, 180 - 180 / n_lon, n_lon)
    rng = np.random.default_rng(1)
    values = (280 - 40 * np.sin(np.radians(lat))[:, None] ** 2 + 5 * np.cos(np.radians(3 * lon))[None, :]).astype(
        np.float32) + rng.normal(0, 0.5, (n_lat, n_lon)).astype(np.float32)
    return xr.DataArray(values, coords={"latitude": lat, "longitude": lon}, dims=("latitude", "longitude"),
                        name="t2m")


def field_benchmark(repeat, cap_cells):
    import geoviews as gv
    from holoviews.operation.datashader import rasterize

    from desp_dashboards.visualisation.views import PLATE_CARREE, ensure_backend

    ensure_backend()
    field = global_field()
    print(f"\n1. field {field.shape[0]} x {field.shape[1]} float32 ({field.nbytes / 2**20:.0f} MiB), plot "
          f"{PLOT_WIDTH} x {PLOT_HEIGHT} px, median of {repeat}")
    image = gv.Image((field["longitude"].values, field["latitude"].values, field.values),
                     kdims=["longitude", "latitude"], vdims=["t2m"], crs=PLATE_CARREE)

    def rerender(x_range, y_range):
        raster = rasterize(image, dynamic=False, x_range=x_range, y_range=y_range, width=PLOT_WIDTH,
                           height=PLOT_HEIGHT, precompute=True)
        return to_browser(raster, cmap="coolwarm", colorbar=True, width=PLOT_WIDTH, height=PLOT_HEIGHT,
                          projection=PLATE_CARREE)

    rerender(*INTERACTIONS[0][1:])  # warm-up (numba compiles datashader's kernels once)
    print(f"   {'interaction':<20} {'rasterize':>10} {'+ figure + JSON':>16}")
    totals = []
    for name, x_range, y_range in INTERACTIONS:
        only = median_seconds(lambda: rasterize(image, dynamic=False, x_range=x_range, y_range=y_range,
                                                width=PLOT_WIDTH, height=PLOT_HEIGHT, precompute=True), repeat)
        total = median_seconds(lambda: rerender(x_range, y_range), repeat)
        totals.append(total)
        print(f"   {name:<20} {only:>9.3f}s {total:>15.3f}s   ({rerender(x_range, y_range) / 2**20:.1f} MiB)")
    worst = max(totals)

    # Without datashader: the whole image to the browser (capped).
    cells = field.size
    step = 1
    while cells / step**2 > cap_cells:
        step *= 2
    sub = field[::step, ::step]
    plain = gv.Image((sub["longitude"].values, sub["latitude"].values, sub.values),
                     kdims=["longitude", "latitude"], vdims=["t2m"], crs=PLATE_CARREE)
    def whole():
        return to_browser(plain, cmap="coolwarm", colorbar=True, width=PLOT_WIDTH, height=PLOT_HEIGHT,
                          projection=PLATE_CARREE)

    seconds = median_seconds(whole, max(1, repeat // 2))
    payload_mib = whole() / 2**20
    scale = field.size / sub.size
    baseline = seconds * scale
    label = "" if step == 1 else f" (measured on {sub.shape[0]} x {sub.shape[1]}, x{scale:.0f} extrapolated)"
    print(f"   without datashader: whole image to the browser {baseline:.3f}s per render, document JSON "
          f"{payload_mib * scale:.0f} MiB{label}")
    ratio = baseline / worst
    print(f"   worst re-render with datashader {worst:.3f}s; ratio without / with: {ratio:.1f}; "
          f"target <= {TARGET_SECONDS:.0f} s: {'PASS' if worst <= TARGET_SECONDS else 'FAIL'}")
    return worst, ratio


def points_benchmark(repeat, n_points, cap_points):
    import holoviews as hv
    import pandas as pd
    from holoviews.operation.datashader import rasterize

    from desp_dashboards.visualisation.views import ensure_backend

    ensure_backend()
    rng = np.random.default_rng(2)
    # Clustered points (cities-like): a mixture of normal blobs over the globe.
    centres = rng.uniform((-150, -60), (150, 70), size=(200, 2)).astype(np.float32)
    which = rng.integers(0, len(centres), n_points)
    x = centres[which, 0] + rng.standard_normal(n_points, dtype=np.float32) * 6
    y = centres[which, 1] + rng.standard_normal(n_points, dtype=np.float32) * 3
    del which
    frame = pd.DataFrame({"x": x, "y": y})
    del x, y
    print(f"\n2. {n_points / 1e6:.0f} million points (float32 x, y; {frame.memory_usage().sum() / 2**20:.0f} MiB), "
          f"median of {repeat}")
    points = hv.Points(frame, kdims=["x", "y"])

    def rerender(x_range, y_range):
        raster = rasterize(points, dynamic=False, x_range=x_range, y_range=y_range, width=PLOT_WIDTH,
                           height=PLOT_HEIGHT)
        return to_browser(raster, cmap="fire", cnorm="eq_hist", width=PLOT_WIDTH, height=PLOT_HEIGHT)

    rerender(*INTERACTIONS[0][1:])  # warm-up
    print(f"   {'interaction':<20} {'aggregate':>10} {'+ figure + JSON':>16}")
    totals = []
    for name, x_range, y_range in INTERACTIONS:
        only = median_seconds(lambda: rasterize(points, dynamic=False, x_range=x_range, y_range=y_range,
                                                width=PLOT_WIDTH, height=PLOT_HEIGHT), repeat)
        total = median_seconds(lambda: rerender(x_range, y_range), repeat)
        totals.append(total)
        print(f"   {name:<20} {only:>9.3f}s {total:>15.3f}s")
    worst = max(totals)

    capped = hv.Points(frame.iloc[:cap_points], kdims=["x", "y"])
    seconds = median_seconds(lambda: to_browser(capped, width=PLOT_WIDTH, height=PLOT_HEIGHT, size=1),
                             max(1, repeat // 2))
    payload_mib = to_browser(capped, width=PLOT_WIDTH, height=PLOT_HEIGHT, size=1) / 2**20
    baseline = seconds * n_points / cap_points
    print(f"   without datashader: bokeh scatter of {cap_points / 1e6:g} million points {seconds:.3f}s, "
          f"{payload_mib:.0f} MiB → {baseline:.1f}s and {payload_mib * n_points / cap_points / 1024:.1f} GiB for "
          f"{n_points / 1e6:.0f} million (extrapolated linearly; the browser would then have to draw them)")
    ratio = baseline / worst
    print(f"   worst re-render with datashader {worst:.3f}s; ratio without / with: {ratio:.1f}; "
          f"target <= {TARGET_SECONDS:.0f} s: {'PASS' if worst <= TARGET_SECONDS else 'FAIL'}")
    return worst, ratio


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--points", type=int, default=100_000_000)
    parser.add_argument("--cap-cells", type=int, default=4096 * 8192,
                        help="largest image sent whole to the browser in the baseline (default: the full field)")
    parser.add_argument("--cap-points", type=int, default=1_000_000,
                        help="points in the baseline scatter (scaled up linearly)")
    args = parser.parse_args()
    import warnings

    warnings.filterwarnings("ignore")
    field_worst, field_ratio = field_benchmark(args.repeat, args.cap_cells)
    points_worst, points_ratio = points_benchmark(args.repeat, args.points, args.cap_points)
    print("\nsummary")
    print(f"   field re-render {field_worst:.3f}s (ratio {field_ratio:.1f}) "
          f"{'PASS' if field_worst <= TARGET_SECONDS else 'FAIL'}")
    print(f"   points re-render {points_worst:.3f}s (ratio {points_ratio:.1f}) "
          f"{'PASS' if points_worst <= TARGET_SECONDS else 'FAIL'}")
    print("   not measured here: median first render of each dashboard in Chromium and memory per extra browser "
          "session (10 sessions, target <= 30 MB): the served dashboards' browser benchmark/tests do that.")


if __name__ == "__main__":
    main()
