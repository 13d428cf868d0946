"""A real Keycloak server for the integration tests: fetched once from Maven Central, cached, run per test session.

    with KeycloakServer(workdir) as keycloak:      # or the `keycloak` fixture of tests/conftest_keycloak.py
        keycloak.url, keycloak.issuer, keycloak.hub_client_secret, keycloak.set_hub_url("http://127.0.0.1:8123")

Layout and choices (measured on the 2-core CI machine, see sandbox/desp_sandbox/realm/README.md):

* The distribution (`org.keycloak:keycloak-quarkus-dist:<version>:zip`) is fetched with
  `mvn -q -B dependency:copy -Dartifact=org.keycloak:keycloak-quarkus-dist:26.7.3:zip -DoutputDirectory=...`
  (Maven Central is the only network access) and unzipped with `zipfile` into
  `$DESP_KEYCLOAK_CACHE/<version>/keycloak-<version>` (default `~/.cache/desp-hub/keycloak/<version>/...`).
* Keycloak 26.x is compiled for Java 17 (class files version 61) and runs on 17, 21 and 25; the first JDK >= 17
  found is used: `$DESP_KEYCLOAK_JAVA_HOME`, `$JAVA_HOME`, `java` on PATH, then /usr/lib/jvm/*.
* The first `start-dev` re-augments the Quarkus application in the distribution's `lib/quarkus` (about 25 s); this
  happens once per cache, under a file lock, so parallel test runs (pytest-xdist workers) never write it together.
* Each server gets its own "home": a directory with a copy of `bin/kc.sh`, symlinks to the cached `lib`, `conf`,
  `themes`, `providers`, and its own `data/` (H2 database, transaction logs, and `data/import/` with a copy of the
  realm file). `kc.sh` derives `kc.home.dir` from its own location, so nothing else is needed (passing
  `-Dkc.home.dir` instead would make Keycloak re-augment on every start).
* It listens on 127.0.0.1 only: `--http-host 127.0.0.1`, the management interface (off while health and metrics
  are off) pinned to `--http-management-host 127.0.0.1` and a free port.
* JVM: `-Xms128m -Xmx512m -XX:TieredStopAtLevel=1` (C1 only: startup is CPU-bound, this cuts its CPU time by ~1/3).
"""

import fcntl
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.support import ManagedProcess, free_port, wait_for_http

KEYCLOAK_VERSION = os.environ.get("DESP_KEYCLOAK_VERSION", "26.7.3")
MIN_JAVA = 17  # Keycloak 26.x: class files version 61
REALM_FILE = Path(__file__).resolve().parents[1] / "sandbox" / "desp_sandbox" / "realm" / "desp-realm.json"
REALM = "desp"
HUB_CLIENT_ID = "desp-hub"
ADMIN_CLIENT_ID = "desp-admin-cli"
DEFAULT_HEAP = "-Xms128m -Xmx512m"
DEFAULT_JAVA_OPTS_APPEND = "-XX:TieredStopAtLevel=1"
DEV_AUGMENTED_MARKER = ".desp-dev-augmented"


class KeycloakUnavailable(RuntimeError):
    """Keycloak cannot run on this machine (no suitable JDK, cannot fetch the distribution): tests skip."""


class KeycloakStartError(RuntimeError):
    """Keycloak was started but did not come up (e.g. the realm file does not import): tests fail."""


def mvn_fetch_command(version: str, output_directory: str) -> list[str]:
    """The Maven command that fetches the distribution zip (CI can run it beforehand to warm ~/.m2)."""
    return ["mvn", "-q", "-B", "dependency:copy", f"-Dartifact=org.keycloak:keycloak-quarkus-dist:{version}:zip",
            f"-DoutputDirectory={output_directory}"]


def cache_dir(version: str = KEYCLOAK_VERSION) -> Path:
    """`$DESP_KEYCLOAK_CACHE/<version>`, by default `~/.cache/desp-hub/keycloak/<version>`."""
    root = os.environ.get("DESP_KEYCLOAK_CACHE") or Path.home() / ".cache" / "desp-hub" / "keycloak"
    return Path(root).expanduser() / version


@contextmanager
def _locked(path: Path, timeout: float = 900):
    """An exclusive advisory lock on `path` (shared by processes and pytest-xdist workers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path} stayed locked for {timeout}s")
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _extract(zip_path: Path, target_parent: Path) -> Path:
    """Unzip keeping the Unix permission bits (zipfile drops them); returns the top-level directory."""
    with zipfile.ZipFile(zip_path) as archive:
        tops = {name.split("/", 1)[0] for name in archive.namelist()}
        if len(tops) != 1:
            raise KeycloakUnavailable(f"{zip_path}: expected one top-level directory, found {sorted(tops)}")
        for info in archive.infolist():
            extracted = archive.extract(info, target_parent)
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                os.chmod(extracted, mode)
    top = target_parent / tops.pop()
    for script in (top / "bin").glob("*.sh"):
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return top


def ensure_distribution(version: str = KEYCLOAK_VERSION) -> Path:
    """The unzipped distribution in the cache, fetched with Maven and unzipped if not there yet."""
    cache = cache_dir(version)
    dist = cache / f"keycloak-{version}"
    if (dist / "bin" / "kc.sh").is_file() and (dist / "lib" / "quarkus-run.jar").is_file():
        return dist
    with _locked(cache / ".lock"):
        if (dist / "bin" / "kc.sh").is_file() and (dist / "lib" / "quarkus-run.jar").is_file():
            return dist
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KeycloakUnavailable(f"Keycloak {version} is not in {cache} and `mvn` is not on PATH to fetch it")
        work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=cache))
        try:
            command = mvn_fetch_command(version, str(work))
            try:
                result = subprocess.run(command, capture_output=True, text=True, timeout=900)
            except subprocess.TimeoutExpired:
                raise KeycloakUnavailable(f"`{' '.join(command)}` took more than 900 s") from None
            zip_path = work / f"keycloak-quarkus-dist-{version}.zip"
            if result.returncode != 0 or not zip_path.is_file():
                output = (result.stdout + result.stderr).strip()[-1500:]
                raise KeycloakUnavailable(f"`{' '.join(command)}` failed (exit {result.returncode}): {output}")
            top = _extract(zip_path, work / "unzipped")
            if top.name != dist.name:
                raise KeycloakUnavailable(f"{zip_path} unpacks to {top.name}, expected {dist.name}")
            top.rename(dist)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return dist


def _java_version(java: Path) -> int | None:
    """The feature version (17, 21, 25, ...) of a `java` executable, or None if it does not run."""
    try:
        result = subprocess.run([str(java), "-XshowSettings:properties", "-version"], capture_output=True,
                                text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"java\.specification\.version = (?:1\.)?(\d+)", result.stderr + result.stdout)
    return int(match.group(1)) if match else None


def find_java(minimum: int = MIN_JAVA) -> tuple[Path, int]:
    """(JAVA_HOME, feature version) of the first JDK >= `minimum`; raises KeycloakUnavailable if there is none."""
    candidates = []
    for variable in ("DESP_KEYCLOAK_JAVA_HOME", "JAVA_HOME"):
        if os.environ.get(variable):
            candidates.append(Path(os.environ[variable]))
    on_path = shutil.which("java")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent.parent)
    jvm_dir = Path("/usr/lib/jvm")
    if jvm_dir.is_dir():
        candidates += sorted(path for path in jvm_dir.iterdir() if path.is_dir())
    seen, tried = set(), []
    for home in candidates:
        java = home / "bin" / "java"
        if os.path.realpath(java) in seen or not java.is_file():
            continue
        seen.add(os.path.realpath(java))
        version = _java_version(java)
        tried.append(f"{home} ({version or 'not runnable'})")
        if version and version >= minimum:
            return home, version
    raise KeycloakUnavailable(
        f"Keycloak {KEYCLOAK_VERSION} needs Java >= {minimum}; found: {', '.join(tried) or 'no java at all'}"
    )


class KeycloakServer:
    """One `kc.sh start-dev` process with the DESP realm imported, on 127.0.0.1 and a free port."""

    def __init__(self, workdir=None, *, version=KEYCLOAK_VERSION, realm_file=REALM_FILE, hub_url=None,
                 hub_client_secret="hub-secret-for-keycloak-tests",
                 admin_client_secret="admin-secret-for-keycloak-tests", admin_username="kc-admin",
                 admin_password="kc-admin-password", port=None, heap=DEFAULT_HEAP,
                 java_opts_append=DEFAULT_JAVA_OPTS_APPEND, startup_timeout=600):
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="desp-keycloak-"))
        self.version = version
        self.realm_file = Path(realm_file)
        self.realm = REALM
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.issuer = f"{self.url}/realms/{self.realm}"
        self.discovery_url = f"{self.issuer}/.well-known/openid-configuration"
        self.admin_url = f"{self.url}/admin/realms/{self.realm}"
        # Redirect URIs depend on the hub's port: by default a port reserved now (nothing listens on it);
        # set_hub_url() points the client at the real hub later through the Admin REST API.
        self.hub_url = hub_url or f"http://127.0.0.1:{free_port()}"
        self.hub_client_id = HUB_CLIENT_ID
        self.hub_client_secret = hub_client_secret
        self.admin_client_id = ADMIN_CLIENT_ID
        self.admin_client_secret = admin_client_secret
        self.metering_client_secret = "metering-secret-for-keycloak-tests"
        self.statistics_client_secret = "statistics-secret-for-keycloak-tests"
        self.admin_username = admin_username  # the master realm's bootstrap administrator
        self.admin_password = admin_password
        self.heap = heap
        self.java_opts_append = java_opts_append
        self.startup_timeout = startup_timeout
        self.home = self.workdir / "home"
        self.log_path = self.workdir / "keycloak.log"
        self.process = None
        self.java_home = None
        self.java_version = None
        self.dist = None
        self.startup_seconds = None  # from `kc.sh` to the realm's discovery document answering 200
        self.augmented = False  # this start re-augmented the cached distribution (first start of a new cache)
        self._discovery = None

    # life cycle

    def start(self):
        self.java_home, self.java_version = find_java()
        self.dist = ensure_distribution(self.version)
        self._make_home()
        marker = self.dist / DEV_AUGMENTED_MARKER
        if not marker.exists():
            # The first start-dev rewrites the distribution's lib/quarkus: only one process may do that.
            with _locked(cache_dir(self.version) / ".lock"):
                if not marker.exists():
                    self._run()
                    self.augmented = "Updating the configuration" in self.process.log_tail(1_000_000)
                    marker.touch()
                    return self
        self._run()
        return self

    def _make_home(self):
        (self.home / "bin").mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.dist / "bin" / "kc.sh", self.home / "bin" / "kc.sh")
        for name in ("lib", "conf", "themes", "providers"):
            link = self.home / name
            if not link.exists():
                link.symlink_to(self.dist / name, target_is_directory=True)
        imports = self.home / "data" / "import"
        imports.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.realm_file, imports / self.realm_file.name)

    def _env(self):
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("KC_", "QUARKUS_", "JAVA_OPTS", "JAVA_ADD_OPENS", "JAVA_TOOL_OPTIONS"))
               and key not in ("JAVA", "JAVA_HOME", "DEBUG", "PRINT_ENV")}
        env.update(
            JAVA_HOME=str(self.java_home),
            JAVA_OPTS_KC_HEAP=self.heap,
            JAVA_OPTS_APPEND=self.java_opts_append,
            KC_BOOTSTRAP_ADMIN_USERNAME=self.admin_username,
            KC_BOOTSTRAP_ADMIN_PASSWORD=self.admin_password,
            DESP_HUB_CLIENT_SECRET=self.hub_client_secret,
            DESP_HUB_URL=self.hub_url,
            DESP_ADMIN_CLIENT_SECRET=self.admin_client_secret,
            DESP_METERING_CLIENT_SECRET=self.metering_client_secret,
            DESP_STATISTICS_CLIENT_SECRET=self.statistics_client_secret,
        )
        return env

    def _run(self):
        args = [str(self.home / "bin" / "kc.sh"), "start-dev", "--import-realm",
                "--http-host", "127.0.0.1", "--http-port", str(self.port),
                "--http-management-host", "127.0.0.1", "--http-management-port", str(free_port())]
        started = time.monotonic()
        self.process = ManagedProcess("keycloak", args, self.log_path, env=self._env(), cwd=str(self.home))
        try:
            wait_for_http(self.discovery_url, timeout=self.startup_timeout, process=self.process, ok_only=True)
        except (RuntimeError, TimeoutError) as error:
            self.process.stop()
            raise KeycloakStartError(f"Keycloak did not start: {error}\nlog ({self.log_path}):\n"
                                     f"{self.process.log_tail()}") from None
        self.startup_seconds = time.monotonic() - started

    def stop(self):
        if self.process is not None:
            self.process.stop(timeout=30)
            self.process = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    # OpenID Connect

    @property
    def redirect_uri(self):
        return f"{self.hub_url}/hub/oauth_callback"

    def discovery(self) -> dict:
        if self._discovery is None:
            response = requests.get(self.discovery_url, timeout=30)
            response.raise_for_status()
            self._discovery = response.json()
        return self._discovery

    def _token(self, realm, data, auth=None):
        response = requests.post(f"{self.url}/realms/{realm}/protocol/openid-connect/token", data=data, auth=auth,
                                 timeout=30)
        response.raise_for_status()
        return response.json()["access_token"]

    def service_account_token(self) -> str:
        """An access token of the `desp-admin-cli` service account (client_credentials): manages desp users."""
        return self._token(self.realm, {"grant_type": "client_credentials"},
                           auth=(self.admin_client_id, self.admin_client_secret))

    def master_admin_token(self) -> str:
        """An access token of the master realm's bootstrap administrator (can change clients too)."""
        return self._token("master", {"grant_type": "password", "client_id": "admin-cli",
                                      "username": self.admin_username, "password": self.admin_password})

    def admin_api(self, method, path, token=None, **kwargs) -> requests.Response:
        """A call to `/admin/realms/desp/<path>`, by default as the desp-admin-cli service account."""
        headers = {"Authorization": f"Bearer {token or self.service_account_token()}", **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.admin_url}/{path.lstrip('/')}", headers=headers, timeout=30,
                                **kwargs)

    def user_id(self, username) -> str:
        users = self.admin_api("GET", "users", params={"username": username, "exact": "true"}).json()
        return users[0]["id"]

    def group_id(self, name) -> str:
        groups = self.admin_api("GET", "groups", params={"search": name, "exact": "true"}).json()
        return next(group["id"] for group in groups if group["name"] == name)

    def set_hub_url(self, hub_url, *more_hub_urls):
        """Point `desp-hub`'s redirect URI and post-logout redirect URIs at the hub(s) now listening there."""
        urls = [url.rstrip("/") for url in (hub_url, *more_hub_urls)]
        token = self.master_admin_token()
        found = self.admin_api("GET", "clients", token=token, params={"clientId": self.hub_client_id}).json()
        client = found[0]
        client["redirectUris"] = [f"{url}/hub/oauth_callback" for url in urls]
        client.setdefault("attributes", {})["post.logout.redirect.uris"] = "##".join(f"{url}/*" for url in urls)
        response = self.admin_api("PUT", f"clients/{client['id']}", token=token, json=client)
        response.raise_for_status()
        self.hub_url = urls[0]

    def describe(self) -> str:
        return json.dumps({"version": self.version, "java": f"{self.java_home} ({self.java_version})",
                           "url": self.url, "startup_seconds": self.startup_seconds, "augmented": self.augmented})
