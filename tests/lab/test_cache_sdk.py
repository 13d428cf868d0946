"""desp_lab.cache against real stores: a local directory, S3 (moto's server) and the sandbox's HTTP "Cache B".

What must hold: a request copies a dataset with monotone progress, is listed with its retention and evicted after it;
the quota is checked before anything is copied; paths escaping the area are refused; a one-step 5 % window of a cached
Zarr store reads exactly the chunks the window touches (counted at the filesystem and, on S3, in the server's log);
HTTP(S) reads work with a bearer token and with ~/.netrc, and are refused without either.
"""

import datetime as dt
import itertools
import os
from pathlib import Path

import fsspec
import numpy as np
import pytest
import s3fs
import xarray as xr
import zarr
from fsspec.implementations.local import LocalFileSystem

from desp_lab import credentials
from desp_lab.cache import MANIFEST_PATH, Cache
from desp_lab.errors import DespError, NotFound, PathOutsideCache, QuotaExceeded

ERA5_STORE = "era5/reanalysis-era5-single-levels-v0.zarr"
# One time step and a window of 40 × 80 of the 181 × 360 one-degree grid: 4.9 % of the globe.
WINDOW = {"valid_time": 5, "latitude": slice(40, 80), "longitude": slice(100, 180)}


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    """A small ERA5-shaped Zarr store (3 chunks per variable) written here, as the source of copy tests."""
    path = tmp_path_factory.mktemp("source") / "small.zarr"
    rng = np.random.default_rng(1)
    data = xr.Dataset(
        {"t2m": (("valid_time", "latitude", "longitude"), rng.normal(280, 10, (6, 19, 36)).astype("float32"))},
        coords={
            "valid_time": np.arange("2024-01-01T00", "2024-01-01T06", dtype="datetime64[h]").astype("datetime64[ns]"),
            "latitude": np.linspace(90, -90, 19),
            "longitude": np.arange(0, 360, 10.0),
        },
    )
    data.to_zarr(path, encoding={"t2m": {"chunks": (2, 19, 36)}}, consolidated=False)
    return path


@pytest.fixture(params=["local", "s3"])
def area(request, tmp_path) -> Cache:
    """An empty cache area on a local directory or in a fresh moto bucket (quota 1 GiB)."""
    if request.param == "local":
        directory = tmp_path / "users" / "researcher"
        directory.mkdir(parents=True)
        return Cache(str(directory), quota_bytes=1024**3, token="unused")
    server = request.getfixturevalue("s3_env")
    bucket = server.create_bucket()
    return Cache(f"s3://{bucket}/users/researcher", storage_options=server.storage_options(), quota_bytes=1024**3)


def _array_metadata(array_dir: Path) -> Path:
    """The metadata file of a Zarr array, v3 (zarr.json) or v2 (.zarray)."""
    return next(array_dir / name for name in ("zarr.json", ".zarray") if (array_dir / name).exists())


def _tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# -- requests, retention, quota --------------------------------------------------------------------------------


def test_request_copies_with_progress_lists_and_evicts_after_retention(area, small_store):
    progress = []
    entry = area.request(str(small_store), name="copies/era5.zarr", retention_days=2,
                         progress=lambda done, total: progress.append((done, total)))

    total = _tree_size(small_store)
    assert entry["size"] == total and entry["path"] == "copies/era5.zarr" and entry["source"] == str(small_store)
    created, expires = (dt.datetime.fromisoformat(entry[key]) for key in ("created", "expires"))
    assert expires - created == dt.timedelta(days=2)
    done = [d for d, _ in progress]
    assert progress[0] == (0, total) and progress[-1] == (total, total)
    assert done == sorted(done) and {t for _, t in progress} == {total}
    assert len(progress) > 3  # streamed, not one jump

    original = xr.open_zarr(small_store, consolidated=False).load()
    xr.testing.assert_identical(area.open_zarr("copies/era5.zarr").load(), original)
    listing = area.ls("copies")
    assert [(e["name"], e["type"], e["size"], e["expires"]) for e in listing] == [
        ("era5.zarr", "directory", total, entry["expires"])
    ]
    assert [e["name"] for e in area.ls()] == ["copies"]  # the manifest folder is not shown
    assert area.info("copies/era5.zarr")["size"] == total
    assert [r["path"] for r in area.requests()] == ["copies/era5.zarr"]
    assert area.usage()["used"] >= total

    assert area.evict_expired(now=created + dt.timedelta(days=1)) == []
    assert area.ls("copies")
    removed = area.evict_expired(now=expires + dt.timedelta(seconds=1))
    assert [r["path"] for r in removed] == ["copies/era5.zarr"]
    assert area.requests() == []
    with pytest.raises(NotFound):
        area.info("copies/era5.zarr")


def test_request_of_a_single_file_keeps_its_bytes(area, small_store):
    source = small_store / "t2m" / "zarr.json"
    entry = area.request(str(source), retention_days=0.5)
    assert entry["name"] == "zarr.json" and entry["files"] == 1
    with area.open("zarr.json") as copied:
        assert copied.read() == source.read_bytes()
    assert area.read_range("zarr.json", 2, 12) == source.read_bytes()[2:12]


def test_request_over_quota_copies_nothing_and_names_the_numbers(area, small_store):
    area.request(str(small_store / "t2m" / "zarr.json"), name="first.json")
    used = area.usage()["used"]
    size = _tree_size(small_store)
    area.quota_bytes = used + size - 1
    calls = []
    with pytest.raises(QuotaExceeded) as raised:
        area.request(str(small_store), name="big.zarr", progress=lambda *a: calls.append(a))
    error = raised.value
    assert (error.status, error.used, error.requested, error.quota) == (413, used, size, used + size - 1)
    assert f"{used} + {size} > {used + size - 1} bytes" in str(error)
    assert calls == [] and area.usage()["used"] == used
    assert [e["name"] for e in area.ls()] == ["first.json"]
    assert [r["name"] for r in area.requests()] == ["first.json"]
    with pytest.raises(QuotaExceeded):
        area.put(small_store, "uploaded.zarr")
    area.quota_bytes = used + size
    area.request(str(small_store), name="big.zarr")  # exactly the quota fits


def test_put_uploads_a_folder_and_refuses_to_overwrite(area, small_store):
    info = area.put(small_store, "mine/small.zarr")
    assert info["type"] == "directory" and info["size"] == _tree_size(small_store)
    assert area.open_zarr("mine/small.zarr").t2m.dims == ("valid_time", "latitude", "longitude")
    with pytest.raises(DespError) as raised:
        area.request(str(small_store), name="mine/small.zarr")
    assert raised.value.status == 409


# -- path safety -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["..", "../other-user", "a/../../other-user", "/etc/passwd", "file:///etc/passwd",
                                  "s3://other-bucket/x", "a/../.."])
def test_paths_outside_the_area_are_refused(area, path, small_store):
    for operation in (
        lambda: area.ls(path),
        lambda: area.info(path),
        lambda: area.open(path),
        lambda: area.read_range(path, 0, 1),
        lambda: area.put(small_store / "zarr.json", path),
        lambda: area.request(str(small_store / "zarr.json"), name=path),
    ):
        with pytest.raises(PathOutsideCache) as raised:
            operation()
        assert raised.value.status == 403 and raised.value.field in ("path", "name")


def test_paths_inside_the_area_are_normalised(area):
    assert area.relative_path("a/./b/../c") == "a/c"
    assert area.relative_path("") == "" and area.relative_path(".") == ""
    assert area.relative_path(area.url + "/x/y") == "x/y"
    if area.protocol == "file":
        assert area.relative_path(os.path.join(area.root, "x")) == "x"


def test_a_symlink_leading_out_of_a_local_area_is_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.txt").write_text("not yours")
    directory = tmp_path / "area"
    directory.mkdir()
    (directory / "escape").symlink_to(outside)
    (directory / "inside.txt").write_text("yours")
    (directory / "fine").symlink_to(directory / "inside.txt")
    cache = Cache(str(directory), quota_bytes=1024**2)
    for operation in (lambda: cache.ls("escape"), lambda: cache.open("escape/secret.txt"),
                      lambda: cache.read_range("escape/secret.txt", 0, 3), lambda: cache.info("escape")):
        with pytest.raises(PathOutsideCache):
            operation()
    with cache.open("fine") as handle:
        assert handle.read() == b"yours"


def test_the_manifest_folder_cannot_be_written_by_users(area, small_store):
    with pytest.raises(DespError) as raised:
        area.put(small_store / "zarr.json", MANIFEST_PATH)
    assert raised.value.status == 403


# -- subset reads fetch only the chunks they need ---------------------------------------------------------------


def _touched_chunk_keys(array: zarr.Array, dims: tuple[str, ...], window: dict) -> set[str]:
    ranges = []
    for dim, size, chunk in zip(dims, array.shape, array.chunks):
        selection = window.get(dim, slice(None))
        if isinstance(selection, int):
            ranges.append(range(selection // chunk, selection // chunk + 1))
        else:
            start, stop, _ = selection.indices(size)
            ranges.append(range(start // chunk, (stop - 1) // chunk + 1))
    return {array.metadata.encode_chunk_key(index) for index in itertools.product(*ranges)}


class ReadLog:
    """(path, bytes) of every whole-object or ranged read zarr made through the filesystem."""

    def __init__(self):
        self.reads: list[tuple[str, int]] = []

    def under(self, prefix: str) -> dict[str, int]:
        prefix = prefix.rstrip("/") + "/"
        found: dict[str, int] = {}
        for path, size in self.reads:
            if path.startswith(prefix):
                key = path[len(prefix):]
                found[key] = found.get(key, 0) + size
        return found


@pytest.fixture
def local_reads(monkeypatch) -> ReadLog:
    log = ReadLog()
    original = LocalFileSystem.cat_file

    def counting_cat_file(self, path, start=None, end=None, **kwargs):
        data = original(self, path, start=start, end=end, **kwargs)
        log.reads.append((self._strip_protocol(path), len(data)))
        return data

    monkeypatch.setattr(LocalFileSystem, "cat_file", counting_cat_file)
    return log


@pytest.fixture
def s3_reads(monkeypatch) -> ReadLog:
    log = ReadLog()
    original = s3fs.S3FileSystem._cat_file

    async def counting_cat_file(self, path, *args, **kwargs):
        data = await original(self, path, *args, **kwargs)
        log.reads.append((self._strip_protocol(path), len(data)))
        return data

    monkeypatch.setattr(s3fs.S3FileSystem, "_cat_file", counting_cat_file)
    return log


@pytest.fixture(scope="module")
def era5_sample(sandbox_catalogue) -> Path:
    return Path(sandbox_catalogue.cache_dir) / ERA5_STORE


def _check_window_reads(cache: Cache, name: str, source: Path, reads: ReadLog, record) -> dict:
    """Open the cached store, read the window, and compare what was read with the chunks it touches."""
    dataset = cache.open_zarr(name)
    variable = dataset["t2m"]
    assert variable.chunks is not None  # lazy, Dask
    reads.reads.clear()
    values = variable.isel(WINDOW).values
    expected_values = xr.open_zarr(source)["t2m"].isel(WINDOW).values
    np.testing.assert_array_equal(values, expected_values)

    array = zarr.open_array(str(source / "t2m"), mode="r")
    expected_keys = _touched_chunk_keys(array, variable.dims, WINDOW)
    read = reads.under(cache.full_path(f"{name}/t2m"))
    chunk_bytes = sum((source / "t2m" / key).stat().st_size for key in expected_keys)
    all_chunks = sum(f.stat().st_size for f in (source / "t2m").rglob("*") if f.is_file() and f.name != "zarr.json")
    read_bytes = sum(read.values())
    other = [path for path, _ in reads.reads if "/t2m/" not in path]
    assert set(read) == expected_keys, (sorted(read), sorted(expected_keys))
    assert read_bytes == chunk_bytes
    assert not other, other  # coordinates were read when opening, nothing else is needed for the window
    numbers = {"window_cells": int(np.prod(values.shape)), "chunks_read": len(read),
               "chunks_touched": len(expected_keys),
               "bytes_read": read_bytes, "chunk_bytes": chunk_bytes, "variable_bytes": all_chunks}
    record(numbers)
    return numbers


def test_window_of_a_locally_cached_store_reads_only_its_chunks(tmp_path, era5_sample, local_reads,
                                                                  record_property):
    cache = Cache(str(tmp_path), quota_bytes=1024**3)
    cache.request(str(era5_sample), name="era5.zarr", retention_days=1)
    numbers = _check_window_reads(cache, "era5.zarr", era5_sample, local_reads,
                                  lambda n: record_property("local_window_reads", n))
    assert numbers["chunk_bytes"] < 0.1 * numbers["variable_bytes"]
    print("local window:", numbers)


def test_window_of_a_store_cached_on_s3_reads_only_its_chunks(s3_env, era5_sample, s3_reads, record_property):
    bucket = s3_env.create_bucket()
    cache = Cache(f"s3://{bucket}/users/researcher", storage_options=s3_env.storage_options(), quota_bytes=1024**3)
    cache.request(str(era5_sample), name="era5.zarr", retention_days=1)
    before = len(s3_env.requests())
    numbers = _check_window_reads(cache, "era5.zarr", era5_sample, s3_reads,
                                  lambda n: record_property("s3_window_reads", n))
    # The server's own log agrees: after opening, one GET per touched chunk of t2m and nothing else of it.
    gets = [path for method, path, status in s3_env.requests()[before:] if method == "GET" and "/t2m/" in path]
    prefix = f"/{bucket}/users/researcher/era5.zarr/t2m/"
    assert {path.split("?")[0][len(prefix):] for path in gets} == set(
        _touched_chunk_keys(zarr.open_array(str(era5_sample / "t2m"), mode="r"),
                            ("valid_time", "latitude", "longitude"), WINDOW))
    assert len(gets) == numbers["chunks_touched"]
    print("s3 window:", numbers)


# -- HTTP(S): the sandbox's Cache B, with a bearer token or ~/.netrc ----------------------------------------------


@pytest.fixture
def no_platform_token(monkeypatch):
    """No hub and no token in the environment, so the SDK falls back to ~/.netrc."""
    for name in ("JUPYTERHUB_API_URL", "JUPYTERHUB_API_TOKEN", "JUPYTERHUB_USER", "DESP_ACCESS_TOKEN",
                 "DESP_TOKEN_EXCHANGE_URL"):
        monkeypatch.delenv(name, raising=False)
    if hasattr(credentials, "forget_cached_tokens"):
        credentials.forget_cached_tokens()
    fsspec.filesystem("https").clear_instance_cache()


def test_http_cache_reads_ranges_and_opens_zarr_with_a_bearer_token(sandbox_catalogue, era5_sample):
    tokens_asked = []

    def token():
        tokens_asked.append(1)
        return sandbox_catalogue.token

    cache = Cache(sandbox_catalogue.cache_url, token=token)
    assert tokens_asked == []  # asked at use, not at construction
    assert cache.read_only
    metadata = _array_metadata(era5_sample / "t2m")
    name = f"{ERA5_STORE}/t2m/{metadata.name}"
    assert cache.info(name)["size"] == metadata.stat().st_size
    assert cache.read_range(name, 3, 40) == metadata.read_bytes()[3:40]
    dataset = cache.open_zarr(ERA5_STORE)
    assert dataset["t2m"].dims == ("valid_time", "latitude", "longitude") and dataset["t2m"].dtype == np.float32
    expected = xr.open_zarr(era5_sample)["t2m"].isel(WINDOW).values
    np.testing.assert_array_equal(dataset["t2m"].isel(WINDOW).values, expected)
    assert tokens_asked
    with pytest.raises(DespError) as raised:
        cache.request(str(era5_sample), name="x.zarr")
    assert raised.value.status == 405  # Cache B is read-only


def test_http_cache_uses_netrc_when_there_is_no_token(sandbox_catalogue, era5_sample, tmp_path, monkeypatch,
                                                      no_platform_token):
    host = sandbox_catalogue.cache_url.split("://", 1)[1].split("/", 1)[0].split(":")[0]
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine {host}\n  login researcher\n  password {sandbox_catalogue.token}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    cache = Cache(sandbox_catalogue.cache_url)
    metadata = _array_metadata(era5_sample / "t2m")
    assert cache.read_range(f"{ERA5_STORE}/t2m/{metadata.name}", 0, 20) == metadata.read_bytes()[:20]
    assert cache.open_zarr(ERA5_STORE)["t2m"].shape == xr.open_zarr(era5_sample)["t2m"].shape


def test_http_cache_without_credentials_is_refused_with_a_message(sandbox_catalogue, era5_sample, tmp_path, monkeypatch,
                                                                  no_platform_token):
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    cache = Cache(sandbox_catalogue.cache_url)
    with pytest.raises(DespError) as raised:
        cache.read_range(f"{ERA5_STORE}/t2m/{_array_metadata(era5_sample / 't2m').name}", 0, 20)
    assert raised.value.status == 401 and "token" in str(raised.value)
    with pytest.raises(DespError) as raised:
        Cache(str(tmp_path), token=lambda: None).request(f"{sandbox_catalogue.cache_url}/{ERA5_STORE}")
    assert raised.value.status == 401


def test_request_copies_a_zarr_store_served_over_http(sandbox_catalogue, era5_sample, tmp_path):
    cache = Cache(str(tmp_path), quota_bytes=1024**3, token=sandbox_catalogue.token)
    progress = []
    entry = cache.request(f"{sandbox_catalogue.cache_url}/{ERA5_STORE}", retention_days=3,
                          progress=lambda done, total: progress.append(done))
    source_files = sorted(p.relative_to(era5_sample).as_posix() for p in era5_sample.rglob("*") if p.is_file())
    copied = tmp_path / "reanalysis-era5-single-levels-v0.zarr"
    assert sorted(p.relative_to(copied).as_posix() for p in copied.rglob("*") if p.is_file()) == source_files
    assert entry["size"] == _tree_size(era5_sample) == progress[-1] and progress == sorted(progress)
    xr.testing.assert_identical(cache.open_zarr(entry["path"]).load(), xr.open_zarr(era5_sample).load())


def test_request_copies_from_s3(area, s3_env, small_store):
    """An s3:// source: with the area's own options when the area is on the same S3, else with explicit ones."""
    bucket = s3_env.create_bucket()
    client = s3_env.client()
    for path in small_store.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), bucket, f"products/small.zarr/{path.relative_to(small_store).as_posix()}")
    options = None if area.protocol == "s3" else s3_env.storage_options()
    entry = area.request(f"s3://{bucket}/products/small.zarr", retention_days=1, source_storage_options=options)
    assert entry["name"] == "small.zarr" and entry["size"] == _tree_size(small_store)
    original = xr.open_zarr(small_store, consolidated=False).load()
    xr.testing.assert_identical(area.open_zarr("small.zarr").load(), original)
    with pytest.raises(NotFound):
        area.request(f"s3://{bucket}/products/missing.zarr", source_storage_options=options)
