"""The hub's workflows service (published notebooks, runs, schedules) from Python, inside a user's server.

    from desp_lab.workflows import Workflows
    flows = Workflows()                                   # DESP_WORKFLOWS_URL, the server's hub API token
    published = flows.publish("analysis.ipynb", name="regional-anomaly", visibility="group", group="desp-users")
    run = flows.run(published.workflow["id"], {"variable": "t2m"})
    flows.wait(run["id"])["status"]                       # "succeeded"

The service is a JupyterHub service: API callers identify themselves with a hub token (`Authorization: token …`),
in a user's server the server's own `JUPYTERHUB_API_TOKEN`, which the hub gives the scope
`access:services!service=workflows`. `publish` makes a workflow, or a new version of the caller's workflow of the
same name (the service keeps one version per distinct notebook content). Errors are `desp_lab.errors` classes with
the service's message and field (`InvalidParameter` 400, `NotFound` 404, `DespError` with the status otherwise,
`ServiceUnavailable` when the service cannot be reached); the client is synchronous, with a timeout per request.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from .errors import DespError, NotFound, ServiceUnavailable

DEFAULT_TIMEOUT_SECONDS = 30.0
VISIBILITIES = ("private", "group", "public")
FINISHED = ("succeeded", "failed", "timed_out")

TokenLike = str | Callable[[], str] | None


class ServiceError(DespError):
    """The workflows service refused the request; `status` and `field` are the service's."""


@dataclass
class Published:
    """What `publish` did: the workflow (as the service shows it), its version, and whether either is new."""

    workflow: dict
    version: dict
    created_workflow: bool
    created_version: bool


def _error(response: requests.Response) -> DespError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    field = body.get("field") if isinstance(body, dict) else None
    if not isinstance(message, str) or not message:
        message = f"The workflows service answered HTTP {response.status_code}."
    if response.status_code == 404:
        return NotFound(message, field=field)
    return ServiceError(message, field=field if isinstance(field, str) else None, status=response.status_code)


def read_notebook(notebook: Mapping | str | os.PathLike) -> dict:
    """A notebook as a plain nbformat v4 dict: given as one already, or as the path of an .ipynb file (read as
    Jupyter's contents manager reads it: cell sources as single strings, so both publish the same content)."""
    import nbformat

    if isinstance(notebook, Mapping):
        return json.loads(json.dumps(notebook))  # a plain copy (NotebookNode → dict), JSON-safe
    path = Path(notebook)
    try:
        node = nbformat.read(path, as_version=4)
    except FileNotFoundError:
        raise NotFound(f"No notebook at {str(path)!r}.", field="notebook") from None
    except (ValueError, nbformat.reader.NotJSONError):
        raise DespError(f"{str(path)!r} is not a notebook (not JSON).", field="notebook", status=400) from None
    return json.loads(json.dumps(node))


class Workflows:
    """Client of the workflows service at `url` (default env `DESP_WORKFLOWS_URL`, ending in `/services/workflows/`).

    `token`: a hub API token (string, or zero-argument callable asked at each request); default env
    `JUPYTERHUB_API_TOKEN`. `user`: the caller's hub name (default env `JUPYTERHUB_USER`), used by `publish` to find
    the caller's own workflow of a name.
    """

    def __init__(self, url: str | None = None, token: TokenLike = None, user: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_SECONDS):  # fmt: skip
        url = url or os.environ.get("DESP_WORKFLOWS_URL")
        if not url:
            raise DespError("No workflows service configured: set DESP_WORKFLOWS_URL (or pass url=).", field="url",
                            status=404)  # fmt: skip
        self.url = url.rstrip("/") + "/"
        self.token = token
        self.user = user if user is not None else os.environ.get("JUPYTERHUB_USER", "")
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Workflows({self.url!r})"

    def _token(self) -> str:
        token = self.token() if callable(self.token) else self.token
        token = token or os.environ.get("JUPYTERHUB_API_TOKEN", "")
        if not token:
            raise DespError("No hub token: not running in a DESP Hub server (JUPYTERHUB_API_TOKEN is not set).",
                            status=401)  # fmt: skip
        return token

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One call to `<url><path>` with the hub token; the JSON answer, or the matching DespError."""
        url = self.url + path.lstrip("/")
        try:
            response = requests.request(
                method, url, json=body, timeout=self.timeout,
                headers={"Authorization": f"token {self._token()}", "Accept": "application/json"},
            )  # fmt: skip
        except requests.Timeout:
            raise ServiceUnavailable("workflows service", url, "timed out") from None
        except requests.ConnectionError:
            raise ServiceUnavailable("workflows service", url, "connection failed") from None
        if response.status_code >= 500:
            raise ServiceUnavailable("workflows service", url, f"HTTP {response.status_code}")
        if response.status_code >= 400:
            raise _error(response)
        return response.json() if response.content else None

    # -- workflows ----------------------------------------------------------------------------------------------

    def list(self) -> list[dict]:
        """The workflows the caller may see (own, shared with a group of theirs, public)."""
        return self.request("GET", "api/workflows")["workflows"]

    def get(self, workflow_id) -> dict:
        return self.request("GET", f"api/workflows/{quote(str(workflow_id), safe='')}")

    def create(self, name: str, notebook, **options) -> dict:
        """A new workflow from the notebook; `options`: description, visibility, group, profile,
        allow_run_by_others, timeout_seconds, retries, outputs (see the service's API)."""
        return self.request("POST", "api/workflows", {"name": name, "notebook": read_notebook(notebook), **options})

    def update(self, workflow_id, **changes) -> dict:
        return self.request("PATCH", f"api/workflows/{quote(str(workflow_id), safe='')}", changes)

    def add_version(self, workflow_id, notebook) -> dict:
        """A new version of the workflow (or the existing one when the notebook's content is unchanged)."""
        return self.request(
            "POST", f"api/workflows/{quote(str(workflow_id), safe='')}/versions", {"notebook": read_notebook(notebook)}
        )

    def find_own(self, name: str) -> dict | None:
        """The caller's own workflow called `name`, or None."""
        for workflow in self.list():
            if workflow.get("name") == name and workflow.get("may_edit") and (
                not self.user or workflow.get("owner") == self.user
            ):
                return workflow
        return None

    def publish(self, notebook, name: str, *, visibility: str | None = None, description: str | None = None,
                group: str | None = None, **options) -> Published:  # fmt: skip
        """Publish the notebook as workflow `name`: a new workflow, or a new version of the caller's own workflow of
        that name (then `visibility`, `description` and `group`, when given, are updated too)."""
        notebook = read_notebook(notebook)
        settings = {key: value for key, value in
                    {"visibility": visibility, "description": description, "group": group, **options}.items()
                    if value is not None}  # fmt: skip
        existing = self.find_own(name)
        if existing is None:
            workflow = self.create(name, notebook, **settings)
            return Published(workflow, workflow.get("latest_version") or {}, True, True)
        before = (existing.get("latest_version") or {}).get("number")
        version = self.add_version(existing["id"], notebook)
        changes = {key: value for key, value in settings.items() if existing.get(key) != value}
        workflow = self.update(existing["id"], **changes) if changes else self.get(existing["id"])
        number = version.get("number") if isinstance(version, dict) else None
        return Published(workflow, version or {}, False, number is not None and number != before)

    # -- runs ---------------------------------------------------------------------------------------------------

    def run(self, workflow_id, parameters: Mapping | None = None, version: int | None = None) -> dict:
        """Queue a run with the given parameters (checked by the service against the declared types)."""
        body: dict[str, Any] = {"parameters": dict(parameters or {})}
        if version is not None:
            body["version"] = version
        return self.request("POST", f"api/workflows/{quote(str(workflow_id), safe='')}/runs", body)

    def get_run(self, run_id) -> dict:
        return self.request("GET", f"api/runs/{quote(str(run_id), safe='')}")

    def wait(self, run_id, timeout: float = 600, interval: float = 0.5) -> dict:
        """The run once it has finished (succeeded, failed or timed out); TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.get_run(run_id)
            if run.get("status") in FINISHED:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {run.get('status')} after {timeout:g} s")
            time.sleep(interval)
