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

3. The served dashboards in Chromium (Debian's /usr/bin/chromium through Playwright), through `desp-hub up` with the
   sandbox catalogue and accounting (`tests.e2e.stack.start_hub`), logged in as `researcher`:
   - time to first render of each dashboard: from `goto` to the first chart drawn (a canvas larger than 200 x 150
     px), median of --sessions-timed new sessions after one warm-up session; for the executive dashboard also the
     time until every panel has loaded (its charts arrive after the page, see executive.views);
   - memory per extra browser session: --sessions more sessions of each dashboard kept open at once, the growth of
     the dashboards service process's resident memory (RSS, and USS: memory only that process holds) divided by
     their number. Target <= 30 MB per session.

Target: a re-render (rasterize + figure + serialisation, server side) <= 1 s. Ratios are "without / with".

Run: `.venv/bin/python benchmarks/dashboards.py [--repeat N] [--points N] [--cap-cells N] [--cap-points N]
[--sessions N] [--sessions-timed N] [--no-browser | --browser-only]`.
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


SESSION_TARGET_MB = 30.0
BIG_CANVAS_JS = """() => { let found = 0;
  const walk = (n) => { if (n.shadowRoot) walk(n.shadowRoot); for (const c of n.children || []) walk(c);
                        if (n.tagName === 'CANVAS' && n.width > 200 && n.height > 150) found++; };
  walk(document.body); return found; }"""
LOADING_JS = """() => { let loading = 0;
  const walk = (n) => { if (n.shadowRoot) walk(n.shadowRoot); for (const c of n.children || []) walk(c);
                        if (n.classList && n.classList.contains('pn-loading')) loading++; };
  walk(document.body); return loading; }"""
PAGE_TIMEOUT_MS = 300_000


def dashboards_process(hub):
    """The dashboards service's process (a child of the hub started by `desp-hub up`), found by its command line
    among the launcher's descendants (only measured, never signalled)."""
    import psutil

    for child in psutil.Process(hub.process.popen.pid).children(recursive=True):
        try:
            if "desp_dashboards.service" in " ".join(child.cmdline()):
                return child
        except psutil.Error:
            continue
    raise RuntimeError("the dashboards service is not running")


def memory_mb(process) -> tuple[float, float]:
    info = process.memory_full_info()
    return info.rss / 2**20, info.uss / 2**20


def open_dashboard(context, url, name):
    """A new page (a new Panel session) on dashboard `name`; returns (page, seconds to the first chart drawn,
    seconds until nothing is loading any more)."""
    page = context.new_page()
    started = time.perf_counter()
    page.goto(url)
    page.wait_for_function(f"() => ({BIG_CANVAS_JS})() >= 1", timeout=PAGE_TIMEOUT_MS, polling=100)
    first = time.perf_counter() - started
    if name == "executive":
        page.wait_for_function(f"() => ({BIG_CANVAS_JS})() >= 1 && ({LOADING_JS})() === 0", timeout=PAGE_TIMEOUT_MS,
                               polling=200)  # fmt: skip
    complete = time.perf_counter() - started
    return page, first, complete


def browser_benchmark(sessions_timed, sessions, names=("visualisation", "executive")):
    import os
    import tempfile

    from playwright.sync_api import sync_playwright

    from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
    from tests.e2e.stack import start_hub

    if not os.access(CHROMIUM, os.X_OK):
        print(f"\n3. skipped: {CHROMIUM} is not installed")
        return None
    print(f"\n3. served dashboards in Chromium (desp-hub up, sandbox catalogue and accounting), user researcher")
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-dashboards-") as data_dir:
        hub = start_hub(data_dir, with_catalogue=True, with_accounting=True)
        try:
            service = dashboards_process(hub)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
                context = browser.new_context(viewport={"width": 1400, "height": 900})
                context.set_default_timeout(PAGE_TIMEOUT_MS)
                login = context.new_page()
                login.goto(hub.url + "/hub/login")
                login.get_by_text("Sign in with DESP").click()
                login.fill("input[name=username]", "researcher")
                login.fill("input[name=password]", "researcher-demo")
                login.locator("input[name=password]").press("Enter")
                login.wait_for_url(f"{hub.url}/hub/**")
                login.close()
                for name in names:
                    url = f"{hub.url}/services/dashboards/{name}"
                    page, first, complete = open_dashboard(context, url, name)  # warm-up: imports, caches
                    page.close()
                    print(f"   {name}: first session (warm-up) first chart {first:.2f}s, complete {complete:.2f}s")
                    firsts, completes = [], []
                    for _ in range(sessions_timed):
                        page, first, complete = open_dashboard(context, url, name)
                        firsts.append(first)
                        completes.append(complete)
                        page.close()
                    results[name] = statistics.median(firsts), statistics.median(completes)
                    extra = f", every panel loaded {results[name][1]:.2f}s" if name == "executive" else ""
                    print(f"   {name}: median time to first render (first chart drawn) {results[name][0]:.2f}s"
                          f"{extra} (median of {sessions_timed} sessions: {', '.join(f'{s:.1f}' for s in firsts)})")
                for name in names:
                    url = f"{hub.url}/services/dashboards/{name}"
                    time.sleep(2)
                    before = memory_mb(service)
                    pages = [open_dashboard(context, url, name)[0] for _ in range(sessions)]
                    time.sleep(2)
                    after = memory_mb(service)
                    rss, uss = ((a - b) / sessions for a, b in zip(after, before, strict=True))
                    results[f"{name} memory"] = rss
                    print(f"   {name}: {sessions} more sessions open at once: service RSS {before[0]:.0f} -> "
                          f"{after[0]:.0f} MB, {rss:.1f} MB per session (USS {uss:.1f} MB); target <= "
                          f"{SESSION_TARGET_MB:.0f} MB: {'PASS' if rss <= SESSION_TARGET_MB else 'FAIL'}")
                    for page in pages:
                        page.close()
                browser.close()
        finally:
            hub.stop()
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--points", type=int, default=100_000_000)
    parser.add_argument("--cap-cells", type=int, default=4096 * 8192,
                        help="largest image sent whole to the browser in the baseline (default: the full field)")
    parser.add_argument("--cap-points", type=int, default=1_000_000,
                        help="points in the baseline scatter (scaled up linearly)")
    parser.add_argument("--sessions", type=int, default=10, help="browser sessions opened at once per dashboard "
                                                                  "for the memory per session")  # fmt: skip
    parser.add_argument("--sessions-timed", type=int, default=5, help="sessions timed per dashboard (median)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--no-browser", action="store_true", help="only the rasterising benchmarks (1, 2)")
    which.add_argument("--browser-only", action="store_true", help="only the served dashboards in Chromium (3)")
    parser.add_argument("--dashboard", choices=["visualisation", "executive"], action="append",
                        help="measure only this served dashboard (repeatable; default: both)")
    args = parser.parse_args()
    import warnings

    warnings.filterwarnings("ignore")
    summary = []
    if not args.browser_only:
        field_worst, field_ratio = field_benchmark(args.repeat, args.cap_cells)
        points_worst, points_ratio = points_benchmark(args.repeat, args.points, args.cap_points)
        summary += [f"field re-render {field_worst:.3f}s (ratio {field_ratio:.1f}) "
                    f"{'PASS' if field_worst <= TARGET_SECONDS else 'FAIL'}",
                    f"points re-render {points_worst:.3f}s (ratio {points_ratio:.1f}) "
                    f"{'PASS' if points_worst <= TARGET_SECONDS else 'FAIL'}"]  # fmt: skip
    if not args.no_browser:
        names = tuple(args.dashboard or ("visualisation", "executive"))
        served = browser_benchmark(args.sessions_timed, args.sessions, names)
        if served:
            for name in names:
                memory = served[f"{name} memory"]
                summary += [f"{name}: first render {served[name][0]:.2f}s (median), memory per extra session "
                            f"{memory:.1f} MB {'PASS' if memory <= SESSION_TARGET_MB else 'FAIL'}"]
    print("\nsummary")
    for line in summary:
        print(f"   {line}")


if __name__ == "__main__":
    main()
