"""The user's cache area: files and Zarr stores on a local directory, S3 or HTTP(S), through fsspec.

`Cache()` reads its place from the environment the hub gives every user server:

- `DESP_CACHE_URL`: fsspec URL of this user's area (`/…/cache/users/alice`, `s3://desp-cache/users/alice`, or a
  read-only `https://cacheb…/` root);
- `DESP_CACHE_STORAGE_OPTIONS`: JSON of fsspec storage options (e.g. `{"endpoint_url": …}` for s3fs; S3 keys come
  from the usual `AWS_*` variables);
- `DESP_CACHE_QUOTA_BYTES`: the area's quota (default 10 GiB).

Every path a user gives is relative to the area; one that escapes it (`..`, an absolute path elsewhere, a symlink
pointing out of a local area) raises `PathOutsideCache`. `request()` copies a dataset (a file or a directory store
such as Zarr, from http(s), s3 or a local path) into the area, streamed with progress, after checking the quota, and
records it with its retention in a manifest (`.desp-cache/manifest.json`); `evict_expired()` removes what expired.

HTTP(S) sources and areas get `Authorization: Bearer <token>`, the token asked for at each use (so a refreshed
token is picked up); without a token, credentials come from `~/.netrc` (aiohttp `trust_env`).
"""

import datetime as dt
import itertools
import json
import os
import posixpath
import threading
import urllib.parse
import uuid
import warnings
from collections.abc import Callable

import fsspec
from fsspec.core import url_to_fs
from fsspec.utils import get_protocol

from .errors import DespError, InvalidParameter, NotFound, PathOutsideCache, QuotaExceeded, ServiceUnavailable

DEFAULT_QUOTA_BYTES = 10 * 1024**3
MANIFEST_DIR = ".desp-cache"
MANIFEST_PATH = f"{MANIFEST_DIR}/manifest.json"
COPY_BLOCK_BYTES = 1024 * 1024
HTTP_PROTOCOLS = ("http", "https")

TokenLike = str | Callable[[], str] | None
ProgressCallback = Callable[[int, int], None]

# One lock per manifest location in this process: the server extension may run several requests in threads.
_manifest_locks: dict[str, threading.Lock] = {}
_manifest_locks_guard = threading.Lock()


def resolve_token(token: TokenLike = None) -> str | None:
    """The bearer token to send now: `token` itself, `token()` if callable, else the platform's data token.

    The default asks `desp_lab.credentials.data_token()` at each call, so a token refreshed by the hub is used
    without the user noticing. None when no token can be had (then HTTP clients fall back to `~/.netrc`).
    """
    from . import credentials

    try:
        return credentials.bearer_token(token, default=credentials.data_token)
    except credentials.CredentialsError:
        return None


def http_storage_options(token: TokenLike = None) -> dict:
    """fsspec/aiohttp options for an HTTP(S) data URL: a Bearer header when a token exists, else `~/.netrc`.

    aiohttp refuses an Authorization header together with netrc credentials, so it is one or the other.
    """
    bearer = resolve_token(token)
    if bearer:
        return {"headers": {"Authorization": f"Bearer {bearer}"}}
    return {"client_kwargs": {"trust_env": True}}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _as_utc(moment: dt.datetime | str | None) -> dt.datetime:
    if moment is None:
        return _utcnow()
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _strip_query(url: str) -> str:
    return url.split("?", 1)[0]


def _manifest_lock(key: str) -> threading.Lock:
    with _manifest_locks_guard:
        return _manifest_locks.setdefault(key, threading.Lock())


class Cache:
    """One user's cache area (see the module docstring for the environment it reads).

    `url`: fsspec URL of the area (default `DESP_CACHE_URL`); `storage_options`: fsspec options (default the JSON in
    `DESP_CACHE_STORAGE_OPTIONS`); `quota_bytes` (default `DESP_CACHE_QUOTA_BYTES`, else 10 GiB); `token`: a string
    or zero-argument callable giving the bearer token for HTTP(S) (default the platform's data token, asked lazily).
    """

    def __init__(
        self,
        url: str | None = None,
        storage_options: dict | None = None,
        quota_bytes: int | None = None,
        token: TokenLike = None,
    ):
        url = url or os.environ.get("DESP_CACHE_URL")
        if not url:
            raise DespError("No cache area configured: set DESP_CACHE_URL (or pass url=).", field="url")
        if storage_options is None:
            raw = os.environ.get("DESP_CACHE_STORAGE_OPTIONS") or "{}"
            try:
                storage_options = json.loads(raw)
            except ValueError:
                raise InvalidParameter("DESP_CACHE_STORAGE_OPTIONS", "not valid JSON") from None
        if quota_bytes is None:
            quota_bytes = int(os.environ.get("DESP_CACHE_QUOTA_BYTES") or DEFAULT_QUOTA_BYTES)
        self.url = url.rstrip("/") or url
        self.protocol = get_protocol(self.url)
        if self.protocol == "local":
            self.protocol = "file"
        self.storage_options = dict(storage_options)
        self.quota_bytes = int(quota_bytes)
        self.token = token
        # The area's root as the filesystem names it ("/dir", "bucket/prefix", "https://host/path").
        self.root = fsspec.get_filesystem_class(self.protocol)._strip_protocol(self.url)
        if self.protocol == "file":
            self.root = os.path.abspath(self.root)
        # The area's root as an absolute path a user might paste ("/dir", "/bucket/prefix", "/cache/users/alice").
        if self.protocol == "file":
            self._absolute_root = self.root
        elif self.protocol in HTTP_PROTOCOLS:
            self._absolute_root = urllib.parse.urlsplit(self.url).path.rstrip("/") or "/"
        else:
            self._absolute_root = "/" + self.root.strip("/")

    def __repr__(self) -> str:
        return f"Cache({_strip_query(self.url)!r}, quota_bytes={self.quota_bytes})"

    # -- filesystem and paths -----------------------------------------------------------------------------------

    @property
    def read_only(self) -> bool:
        """HTTP(S) areas (such as Cache B) can be read, not written."""
        return self.protocol in HTTP_PROTOCOLS

    def _options(self) -> dict:
        if self.protocol in HTTP_PROTOCOLS:
            return {**http_storage_options(self.token), **self.storage_options}
        if self.protocol in ("s3", "s3a"):
            # Other processes (the server extension, the cache service) write here too: list afresh each time.
            return {"use_listings_cache": False, **self.storage_options}
        return dict(self.storage_options)

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The fsspec filesystem of the area, with credentials as of now (fsspec reuses the instance per token)."""
        return fsspec.filesystem(self.protocol, **self._options())

    def relative_path(self, path: str | os.PathLike | None) -> str:
        """`path` normalised relative to the area ("" for the root); PathOutsideCache if it escapes the area.

        Accepted: a relative path, or an absolute path / full URL that lies inside the area.
        """
        original = text = "" if path is None else os.fspath(path)
        if "\x00" in text:
            raise InvalidParameter("path", "contains a NUL character")
        if "://" in text:
            if text.rstrip("/") == self.url:
                return ""
            if not text.startswith(self.url + "/"):
                raise PathOutsideCache(original)
            text = text[len(self.url) + 1 :]
        elif text.startswith("/"):
            root = self._absolute_root.rstrip("/")
            if text.rstrip("/") == root:
                return ""
            if not text.startswith(root + "/"):
                raise PathOutsideCache(original)
            text = text[len(root) + 1 :]
        normal = posixpath.normpath(text.replace("\\", "/")) if text else ""
        if normal in ("", "."):
            return ""
        if normal == ".." or normal.startswith("../") or normal.startswith("/"):
            raise PathOutsideCache(original)
        if self.protocol == "file":
            # A symlink inside a local area must not lead out of it.
            real_root = os.path.realpath(self.root)
            real = os.path.realpath(os.path.join(self.root, normal))
            if real != real_root and not real.startswith(real_root + os.sep):
                raise PathOutsideCache(original)
        return normal

    def full_path(self, path: str | os.PathLike | None) -> str:
        """The filesystem path of `path` inside the area (checked like `relative_path`)."""
        relative = self.relative_path(path)
        return f"{self.root.rstrip('/')}/{relative}" if relative else self.root

    def _check_writable(self, relative: str) -> None:
        if self.read_only:
            raise DespError(f"The cache area {_strip_query(self.url)} is read-only.", status=405)
        if relative == MANIFEST_DIR or relative.startswith(MANIFEST_DIR + "/"):
            raise DespError(f"{MANIFEST_DIR} is kept by DESP; choose another path.", field="path", status=403)
        if not relative:
            raise InvalidParameter("path", "name a file or folder inside the cache area, not the area itself")

    def _call(self, what: str, operation, path: str):
        """Run a filesystem operation, turning a missing path into NotFound and an unreachable store into 502."""
        try:
            return operation()
        except FileNotFoundError:
            raise NotFound(f"{path or '/'} does not exist in your cache area.", field="path") from None
        except DespError:
            raise
        except Exception as error:
            status = getattr(error, "status", None)  # aiohttp's ClientResponseError from an HTTP(S) area
            if status in (401, 403):
                raise DespError(f"Not allowed to {what} {path or '/'} in {_strip_query(self.url)}: "
                                "no valid token or ~/.netrc credentials (log in again?).", status=status) from None
            if not isinstance(error, (ConnectionError, TimeoutError, OSError)):
                raise
            if isinstance(error, (PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)):
                raise DespError(f"Cannot {what} {path!r}: {error.strerror or error}", field="path",
                                status=403) from None
            raise ServiceUnavailable("cache", self.url, type(error).__name__) from None

    # -- reading ------------------------------------------------------------------------------------------------

    def ls(self, path: str = "") -> list[dict]:
        """Entries of a folder: `name`, `path` (relative), `type` (file/directory), `size`, `expires` (or None).

        A dataset copied with `request()` shows its recorded size and expiry; DESP's own folder is hidden.
        """
        relative = self.relative_path(path)
        fs = self.fs
        listing = self._call("list", lambda: fs.ls(self.full_path(relative), detail=True), relative)
        requests = {entry["path"]: entry for entry in self._read_manifest()}
        entries = []
        for info in listing:
            name = posixpath.basename(info["name"].rstrip("/"))
            child = f"{relative}/{name}" if relative else name
            if child == MANIFEST_DIR or not name:
                continue
            request = requests.get(child)
            kind = "directory" if info.get("type") == "directory" else "file"
            size = request["size"] if request else (info.get("size") if kind == "file" else None)
            entries.append(
                {"name": name, "path": child, "type": kind, "size": size, "expires": request and request["expires"]}
            )
        return sorted(entries, key=lambda entry: (entry["type"] != "directory", entry["name"]))

    def info(self, path: str) -> dict:
        """`name`, `path`, `type`, `size` (a folder: the total of its files), `expires`, and `source`/`created` for
        a requested dataset."""
        relative = self.relative_path(path)
        fs = self.fs
        full = self.full_path(relative)
        info = self._call("read", lambda: fs.info(full), relative)
        kind = "directory" if info.get("type") == "directory" else "file"
        size = info.get("size")
        if kind == "directory" and self.protocol not in HTTP_PROTOCOLS:
            size = self._call("read", lambda: fs.du(full, total=True), relative)
        result = {"name": posixpath.basename(relative) or "", "path": relative, "type": kind, "size": size,
                  "expires": None}
        for request in self._read_manifest():
            if request["path"] == relative:
                result.update(expires=request["expires"], created=request["created"], source=request["source"])
        return result

    def open(self, path: str, mode: str = "rb", **kwargs):
        """A file object for `path` (fsspec `open`); writing needs a writable area."""
        relative = self.relative_path(path)
        if any(flag in mode for flag in "wax+"):
            self._check_writable(relative)
        fs = self.fs
        return self._call("open", lambda: fs.open(self.full_path(relative), mode, **kwargs), relative)

    def read_range(self, path: str, start: int, end: int) -> bytes:
        """Bytes `start` (inclusive) to `end` (exclusive) of a file, read with one ranged request."""
        if not (isinstance(start, int) and start >= 0):
            raise InvalidParameter("start", "must be an integer >= 0")
        if not (isinstance(end, int) and end >= start):
            raise InvalidParameter("end", "must be an integer >= start")
        relative = self.relative_path(path)
        fs = self.fs
        return self._call("read", lambda: fs.cat_file(self.full_path(relative), start=start, end=end), relative)

    def open_zarr(self, path: str, **kwargs):
        """A Zarr store of the area as a lazy xarray Dataset (Dask chunks as stored; `kwargs` go to xarray)."""
        import xarray as xr

        relative = self.relative_path(path)
        mapper = self.fs.get_mapper(self.full_path(relative))
        options = {"engine": "zarr", "chunks": {}, **kwargs}

        def open_dataset():
            with warnings.catch_warnings():
                # Stores without consolidated metadata open fine; xarray's advice about it is not for the user.
                warnings.filterwarnings("ignore", "Failed to open Zarr store with consolidated metadata")
                try:
                    return xr.open_dataset(mapper, **options)
                except Exception as error:
                    if "NotFound" in type(error).__name__:  # zarr's GroupNotFoundError / NodeNotFoundError
                        raise FileNotFoundError(relative) from None
                    raise

        return self._call("open", open_dataset, relative)

    def usage(self) -> dict:
        """`{"used": bytes in the area, "quota": bytes allowed}` (an HTTP area reports 0 used: it cannot list)."""
        used = 0
        if not self.read_only:
            fs = self.fs
            if fs.exists(self.root):
                used = int(fs.du(self.root, total=True))
        return {"used": used, "quota": self.quota_bytes}

    # -- writing ------------------------------------------------------------------------------------------------

    def put(self, local: str | os.PathLike, path: str, progress: ProgressCallback | None = None) -> dict:
        """Upload a local file or folder to `path` in the area (quota checked first); returns its `info`."""
        relative = self.relative_path(path)
        self._check_writable(relative)
        source_fs = fsspec.filesystem("file")
        local = os.path.abspath(os.fspath(local))
        files = _source_files(source_fs, local)
        self._copy(source_fs, files, relative, progress)
        return self.info(relative)

    def request(
        self,
        source: str,
        name: str | None = None,
        retention_days: float = 7,
        progress: ProgressCallback | None = None,
        source_storage_options: dict | None = None,
    ) -> dict:
        """Copy a dataset into the area and keep it for `retention_days`; returns its manifest entry.

        `source`: an http(s) URL (e.g. a catalogue asset href; the bearer token or `~/.netrc` is used), an `s3://`
        URL (with the area's storage options when the area is on S3, or `source_storage_options`), or a local path.
        A file or a directory store (Zarr). `name`: where it goes in the area (default the source's last path
        component). `progress(done_bytes, total_bytes)` is called as bytes arrive, last with done == total.
        The quota is checked before anything is copied (QuotaExceeded, nothing written).
        """
        if not isinstance(source, str) or not source.strip():
            raise InvalidParameter("source", "give the URL or path of the dataset to copy")
        try:
            retention_days = float(retention_days)
        except (TypeError, ValueError):
            raise InvalidParameter("retention_days", "must be a number of days") from None
        if not retention_days > 0:
            raise InvalidParameter("retention_days", "must be more than 0 days")
        source = source.strip()
        name = name if name not in (None, "") else posixpath.basename(_strip_query(source).rstrip("/"))
        relative = self.relative_path(name)
        self._check_writable(relative)
        source_fs, source_path = self._source_fs(source, source_storage_options)
        files = _source_files(source_fs, source_path, shown=_strip_query(source))
        created = _utcnow()
        size = self._copy(source_fs, files, relative, progress)
        entry = {
            "name": posixpath.basename(relative),
            "path": relative,
            "source": _strip_query(source),
            "size": size,
            "files": len(files),
            "created": _iso(created),
            "expires": _iso(created + dt.timedelta(days=retention_days)),
            "retention_days": retention_days,
        }
        self._update_manifest(lambda entries: [e for e in entries if e["path"] != relative] + [entry])
        return entry

    def requests(self, now: dt.datetime | None = None) -> list[dict]:
        """The datasets copied with `request()`, each with `expired` (as of `now`, default now)."""
        moment = _as_utc(now)
        return [{**entry, "expired": _as_utc(entry["expires"]) <= moment} for entry in self._read_manifest()]

    def evict_expired(self, now: dt.datetime | None = None) -> list[dict]:
        """Delete the copies whose retention ended by `now` (default now) and their manifest entries; returns them."""
        moment = _as_utc(now)
        removed: list[dict] = []

        def drop_expired(entries):
            keep = []
            for entry in entries:
                if _as_utc(entry["expires"]) <= moment:
                    full = self.full_path(entry["path"])
                    if self.fs.exists(full):
                        self.fs.rm(full, recursive=True)
                    removed.append(entry)
                else:
                    keep.append(entry)
            return keep

        if not self.read_only:
            self._update_manifest(drop_expired)
        return removed

    # -- internals ----------------------------------------------------------------------------------------------

    def _source_fs(self, source: str, options: dict | None):
        protocol = get_protocol(source)
        if options is None:
            if protocol in HTTP_PROTOCOLS:
                options = http_storage_options(self.token)
            elif protocol == self.protocol and protocol != "file":
                options = self.storage_options
            else:
                options = {}
        try:
            return url_to_fs(source, **options)
        except (ValueError, ImportError) as error:
            raise InvalidParameter("source", f"cannot read {_strip_query(source)!r} ({error})") from None

    def _copy(self, source_fs, files: list[tuple[str, str, int]], relative: str, progress) -> int:
        """Stream `files` ((source path, path inside the dataset, size)) to `relative`; quota checked first."""
        total = sum(size for _, _, size in files)
        used = self.usage()["used"]
        if used + total > self.quota_bytes:
            raise QuotaExceeded(used, total, self.quota_bytes)
        fs = self.fs
        destination = self.full_path(relative)
        if fs.exists(destination):
            raise DespError(f"{relative} already exists in your cache area; choose another name.", field="name",
                            status=409)
        done = 0
        if progress:
            progress(0, total)
        try:
            for source_path, inner, _ in files:
                target = f"{destination}/{inner}" if inner else destination
                fs.makedirs(posixpath.dirname(target), exist_ok=True)
                reader = source_fs.open(source_path, "rb", block_size=COPY_BLOCK_BYTES)
                with reader, fs.open(target, "wb") as writer:
                    while block := reader.read(COPY_BLOCK_BYTES):
                        writer.write(block)
                        done += len(block)
                        if progress:
                            progress(done, total)
        except BaseException:
            if fs.exists(destination):
                fs.rm(destination, recursive=True)
            raise
        if progress and done != total:
            # The listing's sizes were estimates (e.g. compressed HTTP); report the real end.
            progress(done, done)
        return done

    def _read_manifest(self) -> list[dict]:
        fs = self.fs
        path = self.full_path(MANIFEST_PATH)
        try:
            with fs.open(path, "rb") as manifest:
                return json.load(manifest).get("requests", [])
        except FileNotFoundError:
            return []
        except (ValueError, OSError):
            return []

    def _update_manifest(self, change: Callable[[list[dict]], list[dict]]) -> None:
        """Read, change and write the manifest under a lock; the new file replaces the old one atomically."""
        path = self.full_path(MANIFEST_PATH)
        with _manifest_lock(f"{self.protocol}:{path}"):
            entries = change(self._read_manifest())
            body = json.dumps({"requests": entries}, indent=1).encode()
            fs = self.fs
            fs.makedirs(posixpath.dirname(path), exist_ok=True)
            if self.protocol == "file":
                temporary = f"{path}.{uuid.uuid4().hex}.tmp"
                with open(temporary, "wb") as handle:
                    handle.write(body)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, path)
            else:
                # One PUT replaces an object atomically on S3-like stores.
                fs.pipe_file(path, body)


def _source_files(fs, path: str, shown: str | None = None) -> list[tuple[str, str, int]]:
    """(path, path relative to the dataset, size) of every file of a dataset: one file, or a directory's files.

    Over HTTP a directory cannot always be listed; a Zarr store is then enumerated from its own metadata.
    """
    shown = shown or path
    try:
        if fs.isfile(path):
            return [(path, "", int(fs.size(path) or 0))]
        if fs.isdir(path):
            found = fs.find(path, detail=True)
            if found:
                base = path.rstrip("/") + "/"
                return [(name, name[len(base):] if name.startswith(base) else posixpath.basename(name),
                         int(info.get("size") or 0)) for name, info in sorted(found.items())]
        zarr_files = _zarr_store_files(fs, path)
        if zarr_files:
            return zarr_files
    except (ConnectionError, TimeoutError) as error:
        raise ServiceUnavailable("data source", shown, type(error).__name__) from None
    except PermissionError:
        raise DespError(f"Not allowed to read {shown}.", field="source", status=403) from None
    except FileNotFoundError:
        pass
    except Exception as error:
        status = getattr(error, "status", None)  # aiohttp's ClientResponseError
        if status in (401, 403):
            raise DespError(f"Not allowed to read {shown}: no valid token or ~/.netrc credentials (log in again?).",
                            field="source", status=status) from None
        if isinstance(error, (OSError, TimeoutError)) or status is not None:
            raise ServiceUnavailable("data source", shown, f"{type(error).__name__} {status or ''}".strip()) from None
        raise
    raise NotFound(f"{shown} does not exist (or is not a file or a Zarr store).", field="source")


def _zarr_store_files(fs, root: str) -> list[tuple[str, str, int]]:
    """Files of a Zarr store (v2 or v3) named by its metadata, for stores that cannot be listed (plain HTTP)."""
    import zarr

    root = root.rstrip("/")
    metadata_names = ("zarr.json", ".zgroup", ".zattrs", ".zmetadata", ".zarray")
    if not any(fs.exists(f"{root}/{name}") for name in ("zarr.json", ".zgroup", ".zarray")):
        return []
    group = zarr.open(store=fs.get_mapper(root), mode="r")
    members = [("", group)]
    if isinstance(group, zarr.Group):
        members += list(group.members(max_depth=None))
    names: list[str] = []
    for member_path, node in members:
        prefix = f"{member_path}/" if member_path else ""
        names += [prefix + name for name in metadata_names]
        if isinstance(node, zarr.Array):
            chunk_grid = [range(n) for n in node.cdata_shape]
            names += [prefix + node.metadata.encode_chunk_key(index) for index in itertools.product(*chunk_grid)]
    files = []
    for name in names:
        try:
            files.append((f"{root}/{name}", name, int(fs.size(f"{root}/{name}") or 0)))
        except FileNotFoundError:
            continue  # metadata of the other Zarr format, or a chunk never written (fill value)
    return files
