"""Data access: the desp_lab SDK against the plain libraries, in one run, on the sandbox catalogue and cache.

1. Search latency: `desp_lab.catalogue.Catalogue.search` against plain `pystac_client.Client.search` on the same
   STAC API (stac-fastapi-pgstac), for several searches, alternating, after a warm-up. Target ratio <= 1.1.
2. Bytes read for a 1 % window (one time step, 10 % of the latitudes x 10 % of the longitudes) of the ERA5-like
   Zarr store through `desp_lab.cache.Cache.open_zarr`, against the bytes of the chunk files the window touches
   (target <= 1.2) and against the whole product; from a local directory (bytes the process read, /proc/self/io)
   and over HTTP from the sandbox cache with a bearer token (bytes the HTTP filesystem returned).
3. Throughput: the window read through the SDK against a raw sequential read of the same chunk files.

Run: `.venv/bin/python benchmarks/data.py [--repeat N]`. Starts the sandbox IdP and catalogue on free ports in a
temporary directory and stops them by PID at the end.
"""

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zarr  # noqa: E402
from fsspec.implementations.http import HTTPFileSystem  # noqa: E402
from pystac_client import Client  # noqa: E402

from desp_lab.cache import Cache  # noqa: E402
from desp_lab.catalogue import Catalogue  # noqa: E402
from tests.conftest_catalogue import CatalogueProcess, make_data_dir  # noqa: E402
from tests.conftest_idp import IdpProcess  # noqa: E402

ERA5 = "EO.ECMWF.DAT.REANALYSIS_ERA5_SINGLE_LEVELS"
S2 = "EO.ESA.DAT.SENTINEL-2.MSI.L2A"
ERA5_STORE = "era5/reanalysis-era5-single-levels-v0.zarr"
SEARCHES = {
    "collection, pages of 2": dict(collections=[ERA5], limit=2),
    "bbox + datetime": dict(collections=[S2], bbox=[6.0, 44.0, 12.0, 48.0], datetime="2024-01-01/2024-12-31"),
    "query ecmwf:param": dict(collections=[ERA5], query={"ecmwf:param": {"eq": "2t"}}),
    "sortby datetime desc": dict(collections=[ERA5], sortby=[{"field": "datetime", "direction": "desc"}], limit=2),
}


def median_seconds(function, repeat):
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def search_latency(stac_url, token, repeat):
    headers = {"Authorization": f"Bearer {token}"}
    sdk = Catalogue(stac_url, token=token)
    plain = Client.open(stac_url, headers=headers)
    print("\n1. search latency (median of %d, seconds)" % repeat)
    print(f"   {'search':<28} {'items':>5} {'SDK':>8} {'pystac-client':>14} {'ratio':>6}")
    ratios = []
    for name, parameters in SEARCHES.items():
        sdk_ids = sdk.search(**parameters).ids
        plain_ids = [item.id for item in plain.search(**parameters).items()]
        assert sdk_ids == plain_ids, f"{name}: the SDK and pystac-client disagree"
        sdk_seconds = median_seconds(lambda: sdk.search(**parameters).ids, repeat)
        plain_time = median_seconds(lambda: [i.id for i in plain.search(**parameters).items()], repeat)
        ratios.append(sdk_seconds / plain_time)
        print(f"   {name:<28} {len(sdk_ids):>5} {sdk_seconds:>8.4f} {plain_time:>14.4f} {ratios[-1]:>6.2f}")
    overall = statistics.geometric_mean(ratios)
    print(f"   geometric mean ratio SDK / pystac-client: {overall:.2f} (target <= 1.1)")
    return overall


def window_of(array: zarr.Array):
    """One time step, the first 10 % of latitudes from 30 % down, 10 % of longitudes from 40 %: 1 % of a field."""
    _, n_lat, n_lon = array.shape
    lat0, lon0 = int(n_lat * 0.3), int(n_lon * 0.4)
    return {"valid_time": 5, "latitude": slice(lat0, lat0 + max(1, n_lat // 10)),
            "longitude": slice(lon0, lon0 + max(1, n_lon // 10))}


def touched_chunk_files(store_dir: Path, variable: str, window) -> list[Path]:
    """The chunk files of `variable` that `window` needs (from the array's chunk grid)."""
    array = zarr.open_array(str(store_dir / variable), mode="r")
    chunk_t, chunk_lat, chunk_lon = array.chunks
    t = window["valid_time"] // chunk_t
    lats = range(window["latitude"].start // chunk_lat, (window["latitude"].stop - 1) // chunk_lat + 1)
    lons = range(window["longitude"].start // chunk_lon, (window["longitude"].stop - 1) // chunk_lon + 1)
    files = []
    for i in lats:
        for j in lons:
            candidates = [store_dir / variable / "c" / str(t) / str(i) / str(j), store_dir / variable / f"{t}.{i}.{j}"]
            found = [path for path in candidates if path.exists()]
            assert found, f"no chunk file for {(t, i, j)} in {store_dir / variable}"
            files.append(found[0])
    return files


def process_bytes_read() -> int:
    with open("/proc/self/io") as io:
        return int(next(line for line in io if line.startswith("rchar:")).split()[1])


def raw_sequential_read(files) -> int:
    total = 0
    for path in files:
        with open(path, "rb") as chunk:
            total += len(chunk.read())
    return total


class CountingHTTP:
    """Counts the bytes HTTPFileSystem hands back for reads (whole files and ranges)."""

    def __init__(self):
        self.bytes = 0
        self._original = HTTPFileSystem._cat_file

    def __enter__(self):
        counter = self

        async def counting_cat_file(fs, url, start=None, end=None, **kwargs):
            data = await counter._original(fs, url, start=start, end=end, **kwargs)
            counter.bytes += len(data)
            return data

        HTTPFileSystem._cat_file = counting_cat_file
        return self

    def __exit__(self, *exc):
        HTTPFileSystem._cat_file = self._original


def window_reads(cache_dir: Path, cache_url: str, token: str, repeat: int):
    store = cache_dir / ERA5_STORE
    whole_product = sum(path.stat().st_size for path in store.rglob("*") if path.is_file())
    local = Cache(url=str(cache_dir), quota_bytes=10**12)
    window = window_of(zarr.open_array(str(store / "t2m"), mode="r"))
    chunk_files = touched_chunk_files(store, "t2m", window)
    chunk_bytes = sum(path.stat().st_size for path in chunk_files)

    # warm-up: imports, codecs and thread pools, on another window, so the counts below are the read alone
    local.open_zarr(ERA5_STORE)["t2m"].isel(valid_time=0, latitude=slice(0, 5), longitude=slice(0, 5)).values

    before = process_bytes_read()
    subset = local.open_zarr(ERA5_STORE)["t2m"].isel(**window).values
    local_bytes = process_bytes_read() - before

    http = Cache(url=cache_url, token=token)
    http.open_zarr(ERA5_STORE)["t2m"].isel(valid_time=0, latitude=slice(0, 5), longitude=slice(0, 5)).values
    with CountingHTTP() as counted:
        http_subset = http.open_zarr(ERA5_STORE)["t2m"].isel(**window).values
    assert (http_subset == subset).all()

    print(f"\n2. bytes read for a 1 % window {subset.shape} of t2m, one time step")
    print(f"   chunk files the window touches: {len(chunk_files)} files, {chunk_bytes} bytes; "
          f"whole product {whole_product} bytes")
    for name, count in (("local directory", local_bytes), ("HTTP cache (Range)", counted.bytes)):
        print(f"   {name:<20} read {count:>10} bytes: {count / chunk_bytes:.2f} x the touched chunks (target <= 1.2),"
              f" {count / whole_product:.4f} x the whole product")

    opened = local.open_zarr(ERA5_STORE)["t2m"]
    timings = {
        "SDK open + window read": median_seconds(lambda: local.open_zarr(ERA5_STORE)["t2m"].isel(**window).values,
                                                 repeat),
        "SDK window read (opened)": median_seconds(lambda: opened.isel(**window).values, repeat),
        "raw sequential read of the chunk files": median_seconds(lambda: raw_sequential_read(chunk_files), repeat),
    }
    raw_seconds = timings["raw sequential read of the chunk files"]
    print("\n3. throughput of the window read (median of %d; files in the page cache)" % repeat)
    for name, seconds in timings.items():
        print(f"   {name:<40} {seconds * 1000:>8.2f} ms {chunk_bytes / seconds / 1e6:>8.1f} MB/s of chunk data"
              f"   x{seconds / raw_seconds:.1f} the raw read")
    return local_bytes / chunk_bytes, counted.bytes / chunk_bytes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="repetitions per measurement (default %(default)s)")
    args = parser.parse_args()
    workdir = make_data_dir("desp-bench-data-")
    idp = catalogue = None
    try:
        (workdir / "idp").mkdir()
        (workdir / "catalogue").mkdir(mode=0o755)
        idp = IdpProcess(workdir / "idp").start()
        catalogue = CatalogueProcess(workdir / "catalogue", idp.jwks_url, idp.issuer).start()
        token = idp.client_token()["access_token"]
        print(f"sandbox catalogue at {catalogue.stac_url}")
        search_ratio = search_latency(catalogue.stac_url, token, args.repeat)
        local_ratio, http_ratio = window_reads(catalogue.data_dir / "cache", catalogue.cache_url, token, args.repeat)
        print(f"\nsummary: search ratio {search_ratio:.2f} (<= 1.1), window bytes ratio local {local_ratio:.2f} / "
              f"HTTP {http_ratio:.2f} (<= 1.2)")
    finally:
        for process in (catalogue, idp):
            if process is not None:
                process.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
