"""The `workflows` hub service: publish notebooks as versioned workflows, run them with parameters now or on a
schedule, keep and share their results. JSON REST API at `/services/workflows/api/`.

Every caller is identified by the hub with their own token (`HubOAuth`: `Authorization: token ...`, or the
service's OAuth cookie in a browser), so the service needs no hub API scope of its own. What a caller may do
follows the workflow's visibility:

- `private`: only the owner sees it; `group`: members of its hub group too; `public`: every user.
- Whoever sees a workflow sees its versions, schedule and runs (results, HTML, log, outputs).
- Running it needs ownership or `allow_run_by_others`; the run is the caller's (their DCUs).
- Only the owner edits, publishes versions, schedules or deletes it.

A workflow the caller may not see is answered 404, as if it did not exist. Errors are JSON
`{"message": ..., "field": ...}`; a 400 names the field at fault.

Runs are executed by `desp_hub.workflows.runner.WorkflowRunner` in this process (papermill in a child process per
run, by default), so they outlive any user's server; schedules are ticked by the same loop.

Run by JupyterHub as a managed service (see `desp_hub.services.install.install_workflows_service`):

    python -m desp_hub.services.workflows_service --WorkflowsService.db_url=sqlite:///workflows.sqlite ...
"""

from __future__ import annotations

import asyncio
import datetime
import importlib.util
import logging
import mimetypes
import os
import re
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuth
from jupyterhub.utils import url_path_join
from tornado import web
from traitlets import Integer, Unicode, default
from traitlets.config import Application

from desp_hub.services.profiles_service import (
    ApiError,
    HubCallerMixin,
    OAuthCallbackHandler,
    request_logger,
    service_application,
)
from desp_hub.workflows import scheduler
from desp_hub.workflows.notebook import NotebookError, Parameter, content_hash, declared_parameters, read_notebook
from desp_hub.workflows.parameters import ParameterError, validate
from desp_hub.workflows.runner import ProfileDirectory, WorkflowRunner
from desp_hub.workflows.store import NameTaken, NotFound, WorkflowStore

log = logging.getLogger("desp_hub.services.workflows")

SERVICE_NAME = "workflows"
MAX_BODY_BYTES = 32 * 1024 * 1024  # a notebook with embedded figures is a few MB
VISIBILITIES = ("private", "group", "public")
NAME_MAX = 200
DESCRIPTION_MAX = 10_000
OUTPUT_PATTERNS_MAX = 50
RETRIES_MAX = 10
RUNS_LIMIT_MAX = 1000
DEFAULT_OUTPUTS = ["*.csv", "*.png"]
WORKFLOW_FIELDS = ("name", "notebook", "description", "visibility", "group", "profile", "allow_run_by_others",
                   "timeout_seconds", "retries", "outputs")  # fmt: skip
SCHEDULE_FIELDS = ("cron", "timezone", "interval_seconds", "missed_policy", "enabled", "parameters")
_ID = re.compile(r"^[0-9]{1,18}$")


# --- models (what the API answers) ----------------------------------------------------------------------------------


def iso(value: datetime.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


def is_visible(workflow: Mapping[str, Any], caller: Mapping[str, Any]) -> bool:
    if workflow["owner"] == caller["name"] or workflow["visibility"] == "public":
        return True
    return workflow["visibility"] == "group" and workflow["group_name"] in (caller.get("groups") or ())


def may_run(workflow: Mapping[str, Any], caller: Mapping[str, Any]) -> bool:
    return workflow["owner"] == caller["name"] or (workflow["allow_run_by_others"] and is_visible(workflow, caller))


def may_edit(workflow: Mapping[str, Any], caller: Mapping[str, Any]) -> bool:
    return workflow["owner"] == caller["name"]


def version_model(version: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "number": version["number"],
        "sha256": version["sha256"],
        "parameters": list(version["parameters"]),
        "created_at": iso(version["created_at"]),
        "created_by": version["created_by"],
    }


def schedule_model(schedule: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if schedule is None:
        return None
    return {
        "cron": schedule["cron"],
        "timezone": schedule["timezone"],
        "interval_seconds": schedule["interval_seconds"],
        "missed_policy": schedule["missed_policy"],
        "enabled": schedule["enabled"],
        "parameters": schedule["parameters"],
        "user": schedule["username"],
        "next_tick": iso(schedule["next_tick"]) if schedule["enabled"] else None,
    }


def workflow_model(workflow: Mapping[str, Any], latest: Mapping[str, Any], schedule: Mapping[str, Any] | None,
                   caller: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
    return {
        "id": workflow["id"],
        "name": workflow["name"],
        "owner": workflow["owner"],
        "description": workflow["description"],
        "visibility": workflow["visibility"],
        "group": workflow["group_name"],
        "profile": workflow["profile"],
        "allow_run_by_others": workflow["allow_run_by_others"],
        "timeout_seconds": workflow["timeout_seconds"],
        "retries": workflow["retries"],
        "outputs": list(workflow["outputs"]),
        "created_at": iso(workflow["created_at"]),
        "updated_at": iso(workflow["updated_at"]),
        "latest_version": version_model(latest),
        "schedule": schedule_model(schedule),
        "may_run": may_run(workflow, caller),
        "may_edit": may_edit(workflow, caller),
    }


def run_model(run: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    base = url_path_join(prefix, f"api/runs/{run['id']}")
    return {
        "id": run["id"],
        "workflow_id": run["workflow_id"],
        "version": run["version"],
        "user": run["username"],
        "parameters": run["parameters"],
        "trigger": run["trigger"],
        "tick_at": iso(run["tick_at"]),
        "status": run["status"],
        "attempt": run["attempt"],
        "retries": run["retries"],
        "profile": run["profile"],
        "timeout_seconds": run["timeout_seconds"],
        "queued_at": iso(run["queued_at"]),
        "started_at": iso(run["started_at"]),
        "finished_at": iso(run["finished_at"]),
        "run_seconds": round(run["run_seconds"] or 0.0, 3),
        "error": run["error"],
        "outputs": [dict(output) for output in run["outputs"] or ()],
        "trace_error": run["trace_error"],
        "dcu": run["dcu_amount"],
        "dcu_transaction_id": run["dcu_transaction_id"],
        "urls": {
            "notebook": f"{base}/notebook",
            "html": f"{base}/html",
            "log": f"{base}/log",
            "outputs": f"{base}/outputs/",
        },
    }


# --- request checks -------------------------------------------------------------------------------------------------


def check_text(value: Any, field: str, *, max_length: int, required: bool = False) -> str:
    if not isinstance(value, str):
        raise ApiError(400, f"{field} must be a string", field=field)
    if "\x00" in value or len(value) > max_length:
        raise ApiError(400, f"{field} must be text of at most {max_length} characters without NUL", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"{field} must be valid Unicode", field=field) from None
    if required and not value.strip():
        raise ApiError(400, f"{field} must not be empty", field=field)
    return value


def check_int(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(400, f"{field} must be a whole number from {low} to {high}, got {value!r}", field=field)
    return value


def check_bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise ApiError(400, f"{field} must be true or false, got {value!r}", field=field)
    return value


def check_outputs(value: Any) -> list[str]:
    """Output file patterns: relative globs inside the run's directory (no absolute paths, no `..`)."""
    if not isinstance(value, list) or len(value) > OUTPUT_PATTERNS_MAX:
        raise ApiError(400, f"outputs must be a list of at most {OUTPUT_PATTERNS_MAX} file patterns", field="outputs")
    patterns = []
    for pattern in value:
        check_text(pattern, "outputs", max_length=255, required=True)
        parts = pattern.replace("\\", "/").split("/")
        if pattern.startswith(("/", "\\", "~")) or ".." in parts:
            raise ApiError(400, f"output pattern {pattern!r} must stay inside the run's directory", field="outputs")
        patterns.append(pattern)
    return patterns


def check_notebook(value: Any) -> tuple[dict[str, Any], str, list[Parameter]]:
    """(notebook dict, content hash, declared parameters); ApiError(400) naming `notebook`."""
    if value is None:
        raise ApiError(400, "notebook is required: the nbformat v4 JSON of the notebook", field="notebook")
    try:
        notebook = read_notebook(value)
        parameters = declared_parameters(notebook)
    except NotebookError as error:
        raise ApiError(400, str(error), field=error.field) from None
    return dict(notebook), content_hash(notebook), parameters


def check_id(text: str, what: str) -> int:
    if not _ID.match(text):
        raise ApiError(404, f"there is no {what} {text!r}")
    return int(text)


log_request = request_logger(log)


# --- handlers -------------------------------------------------------------------------------------------------------


class BaseHandler(HubCallerMixin, web.RequestHandler):
    """The workflows API's handlers: the caller through the hub (`HubCallerMixin`); JSON helpers; store calls in
    worker threads."""

    service_name = SERVICE_NAME
    empty_body = b"null"

    def initialize(self, service: WorkflowsService):
        self.service = service
        self.store: WorkflowStore = service.store
        self.runner: WorkflowRunner = service.runner
        self._caller = None

    @property
    def caller(self) -> dict[str, Any]:
        caller = super().caller
        if caller.get("kind") == "service":
            raise ApiError(403, "workflows belong to users; a service token cannot use them")
        return caller

    def json_object(self, allowed: tuple[str, ...]) -> dict[str, Any]:
        body = self.json_body()
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object", field="body")
        for name in body:
            if name not in allowed:
                raise ApiError(400, f"unknown field {name!r} (allowed: {', '.join(allowed)})", field=name)
        return body

    async def call(self, function, *args, **kwargs):
        """A blocking store call in a worker thread, its errors as API errors."""
        try:
            return await asyncio.to_thread(function, *args, **kwargs)
        except NotFound as error:
            raise ApiError(404, str(error)) from None
        except NameTaken as error:
            raise ApiError(409, str(error), field="name", workflow_id=error.workflow_id) from None

    async def visible_workflow(self, workflow_id: str) -> dict[str, Any]:
        """The workflow if the caller may see it; 404 otherwise (existence is not disclosed)."""
        number = check_id(workflow_id, "workflow")
        try:
            workflow = await asyncio.to_thread(self.store.get_workflow, number)
        except NotFound:
            workflow = None
        if workflow is None or not is_visible(workflow, self.caller):
            raise ApiError(404, f"there is no workflow {workflow_id}")
        return workflow

    async def editable_workflow(self, workflow_id: str) -> dict[str, Any]:
        workflow = await self.visible_workflow(workflow_id)
        if not may_edit(workflow, self.caller):
            raise ApiError(403, f"only {workflow['owner']}, its owner, may change workflow {workflow['id']}")
        return workflow

    async def model(self, workflow: Mapping[str, Any]) -> dict[str, Any]:
        latest = await self.call(self.store.latest_version, workflow["id"])
        schedule = await self.call(self.store.get_schedule, workflow["id"])
        return workflow_model(workflow, latest, schedule, self.caller)

    async def visible_run(self, run_id: str) -> dict[str, Any]:
        """The run if the caller may see its workflow (deleted workflows: the run's user still sees it)."""
        number = check_id(run_id, "run")
        try:
            run = await asyncio.to_thread(self.store.get_run, number)
        except NotFound:
            raise ApiError(404, f"there is no run {run_id}") from None
        try:
            workflow = await asyncio.to_thread(self.store.get_workflow, run["workflow_id"])
        except NotFound:
            workflow = None
        visible = is_visible(workflow, self.caller) if workflow else run["username"] == self.caller["name"]
        if not visible:
            raise ApiError(404, f"there is no run {run_id}")
        return run

    async def caller_access_token(self) -> str:
        """The caller's current DESP access token (their auth_state, read with their own hub token, which the hub
        refreshes as it answers), so their run reads data as them; "" when the token may not read it."""
        from desp_lab.credentials import CredentialsError, access_token

        hub_token = self.hub_auth.get_token(self)
        if not hub_token:
            return ""
        environ = {"JUPYTERHUB_API_URL": self.hub_auth.api_url, "JUPYTERHUB_API_TOKEN": hub_token,
                   "JUPYTERHUB_USER": self.caller["name"]}  # fmt: skip
        try:
            return await asyncio.to_thread(access_token, environ)
        except (CredentialsError, OSError, ValueError) as error:
            log.info("No DESP access token for %s's run (%s): it runs without one", self.caller["name"], error)
            return ""

    async def queue_run(self, workflow: Mapping[str, Any], version: Mapping[str, Any], values: Mapping[str, Any]):
        """Queue a run of `version` for the caller, with their DESP access token.

        The token is fetched before the run exists: the runner may take a queued run at once, and a run taken
        before its token was handed over would read data without one."""
        token = await self.caller_access_token()
        run = await self.call(self.store.create_run, workflow["id"], version["number"], self.caller["name"], values)
        if token:
            self.runner.access_tokens[run["id"]] = token
        self.runner.wake()
        return run

    async def check_profile(self, slug: Any, field: str = "profile") -> str:
        """The profile must exist and the caller must be entitled to it (when the service knows the profiles)."""
        if not isinstance(slug, str) or not slug:
            raise ApiError(400, "profile must be the slug of a server profile", field=field)
        problem = await asyncio.to_thread(self.service.profiles.refusal, slug, self.caller)
        if problem:
            raise ApiError(400, problem, field=field)
        return slug


    async def workflow_fields(self, body: Mapping[str, Any], *, defaults: bool,
                              current: Mapping[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
        """Checked store fields from a POST (with defaults) or PATCH (only what is given) body."""
        caller = self.caller
        fields: dict[str, Any] = {}
        if defaults:
            fields = {"description": "", "visibility": "private", "group_name": None, "allow_run_by_others": False,
                      "profile": self.service.default_profile, "timeout_seconds": self.service.default_timeout_seconds,
                      "retries": 0, "outputs": list(DEFAULT_OUTPUTS)}  # fmt: skip
        if "name" in body:
            fields["name"] = check_text(body["name"], "name", max_length=NAME_MAX, required=True).strip()
        if "description" in body:
            fields["description"] = check_text(body["description"], "description", max_length=DESCRIPTION_MAX)
        if "visibility" in body:
            if body["visibility"] not in VISIBILITIES:
                raise ApiError(400, f"visibility must be one of {', '.join(VISIBILITIES)}", field="visibility")
            fields["visibility"] = body["visibility"]
        if "group" in body:
            group = body["group"]
            fields["group_name"] = None if group in (None, "") else check_text(group, "group", max_length=255)
        if "allow_run_by_others" in body:
            fields["allow_run_by_others"] = check_bool(body["allow_run_by_others"], "allow_run_by_others")
        if "profile" in body:
            fields["profile"] = await self.check_profile(body["profile"])
        elif defaults:
            await self.check_profile(fields["profile"])
        if "timeout_seconds" in body:
            fields["timeout_seconds"] = check_int(
                body["timeout_seconds"], "timeout_seconds", 1, self.service.max_timeout_seconds
            )
        if "retries" in body:
            fields["retries"] = check_int(body["retries"], "retries", 0, RETRIES_MAX)
        if "outputs" in body:
            fields["outputs"] = check_outputs(body["outputs"])
        # a group workflow needs a group the owner belongs to
        visibility = fields.get("visibility", (current or {}).get("visibility"))
        group = fields.get("group_name", (current or {}).get("group_name"))
        if visibility == "group":
            if not group:
                raise ApiError(400, "a workflow shared with a group needs the group's name", field="group")
            if group not in (caller.get("groups") or ()) and not caller.get("admin"):
                raise ApiError(400, f"you are not a member of the group {group!r}", field="group")
        return fields

class WorkflowsHandler(BaseHandler):
    async def get(self):
        caller = self.caller
        workflows = await self.call(self.store.list_workflows, caller["name"], caller.get("groups") or ())
        ids = [w["id"] for w in workflows]
        latest = await self.call(self.store.latest_versions, ids)
        schedules = await self.call(self.store.schedules_of, ids)
        self.write_json({"workflows": [
            workflow_model(w, latest[w["id"]], schedules.get(w["id"]), caller) for w in workflows if w["id"] in latest
        ]})  # fmt: skip

    async def post(self):
        caller = self.caller
        body = self.json_object(WORKFLOW_FIELDS)
        if "name" not in body:
            raise ApiError(400, "name is required", field="name")
        notebook, sha256, parameters = check_notebook(body.get("notebook"))
        fields = await self.workflow_fields(body, defaults=True)
        workflow = await self.call(
            self.store.create_workflow, caller["name"], fields, notebook, sha256, [p.to_dict() for p in parameters]
        )
        self.set_header("Location", url_path_join(self.request.path, str(workflow["id"])))
        self.write_json(await self.model(workflow), status=201)

class WorkflowHandler(BaseHandler):
    async def get(self, workflow_id: str):
        self.write_json(await self.model(await self.visible_workflow(workflow_id)))

    async def patch(self, workflow_id: str):
        workflow = await self.editable_workflow(workflow_id)
        body = self.json_object(tuple(f for f in WORKFLOW_FIELDS if f != "notebook"))
        fields = await self.workflow_fields(body, defaults=False, current=workflow)
        updated = await self.call(self.store.update_workflow, workflow["id"], fields)
        self.write_json(await self.model(updated))

    async def delete(self, workflow_id: str):
        workflow = await self.editable_workflow(workflow_id)
        running = await self.call(self.store.delete_workflow, workflow["id"])
        for run_id in running:
            self.runner.cancel(run_id, "the workflow was deleted")
        self.set_status(204)
        self.finish()


class VersionsHandler(BaseHandler):
    async def get(self, workflow_id: str):
        workflow = await self.visible_workflow(workflow_id)
        versions = await self.call(self.store.list_versions, workflow["id"])
        self.write_json({"versions": [version_model(v) for v in versions]})

    async def post(self, workflow_id: str):
        workflow = await self.editable_workflow(workflow_id)
        body = self.json_object(("notebook",))
        notebook, sha256, parameters = check_notebook(body.get("notebook"))
        version, created = await self.call(
            self.store.add_version, workflow["id"], notebook, sha256, [p.to_dict() for p in parameters],
            self.caller["name"],
        )
        self.write_json(version_model(version), status=201 if created else 200)


class VersionHandler(BaseHandler):
    async def get(self, workflow_id: str, number: str):
        """One version, with its notebook."""
        workflow = await self.visible_workflow(workflow_id)
        version = await self.call(self.store.get_version, workflow["id"], check_id(number, "version"))
        self.write_json({**version_model(version), "notebook": version["notebook"]})


class RunsHandler(BaseHandler):
    async def get(self, workflow_id: str):
        workflow = await self.visible_workflow(workflow_id)
        limit = self.get_query_argument("limit", "100")
        limit = check_int(int(limit) if limit.isdecimal() else limit, "limit", 1, RUNS_LIMIT_MAX)
        runs = await self.call(self.store.list_runs, workflow["id"], limit=limit)
        self.write_json({"runs": [run_model(run, self.settings["service_prefix"]) for run in runs]})

    async def post(self, workflow_id: str):
        caller = self.caller
        workflow = await self.visible_workflow(workflow_id)
        if not may_run(workflow, caller):
            raise ApiError(403, f"{workflow['owner']} does not let others run workflow {workflow['id']}")
        body = self.json_object(("parameters", "version"))
        number = body.get("version")
        if number is not None:
            number = check_int(number, "version", 1, 2**31 - 1)
            version = await self.call(self.store.get_version, workflow["id"], number)
        else:
            version = await self.call(self.store.latest_version, workflow["id"])
        declared = [Parameter.from_dict(p) for p in version["parameters"]]
        try:
            values = validate(declared, body.get("parameters"))
        except ParameterError as error:
            raise ApiError(400, error.message if error.field == "parameters" else f"{error.field} {error.message}",
                           field=error.field) from None  # fmt: skip
        await self.check_profile(workflow["profile"])
        run = await self.queue_run(workflow, version, values)
        self.set_header("Location", url_path_join(self.settings["service_prefix"], f"api/runs/{run['id']}"))
        self.write_json(run_model(run, self.settings["service_prefix"]), status=202)


class ScheduleHandler(BaseHandler):
    async def get(self, workflow_id: str):
        workflow = await self.visible_workflow(workflow_id)
        schedule = await self.call(self.store.get_schedule, workflow["id"])
        if schedule is None:
            raise ApiError(404, f"workflow {workflow['id']} has no schedule")
        self.write_json(schedule_model(schedule))

    async def put(self, workflow_id: str):
        workflow = await self.editable_workflow(workflow_id)
        body = self.json_object(SCHEDULE_FIELDS)
        try:
            timing = scheduler.ScheduleTiming.from_request(body)
        except scheduler.ScheduleError as error:
            raise ApiError(400, str(error), field=error.field) from None
        latest = await self.call(self.store.latest_version, workflow["id"])
        try:
            values = validate([Parameter.from_dict(p) for p in latest["parameters"]], body.get("parameters"))
        except ParameterError as error:
            raise ApiError(400, f"{error.field} {error.message}", field=error.field) from None
        missed_policy = body.get("missed_policy", "run_once")
        if missed_policy not in scheduler.MISSED_POLICIES:
            raise ApiError(400, f"missed_policy must be one of {', '.join(scheduler.MISSED_POLICIES)}",
                           field="missed_policy")  # fmt: skip
        enabled = check_bool(body.get("enabled", True), "enabled")
        await self.check_profile(workflow["profile"])
        schedule = await self.call(self.store.set_schedule, workflow["id"], {
            **timing.to_fields(), "missed_policy": missed_policy, "enabled": enabled, "parameters": values,
            "username": self.caller["name"], "next_tick": timing.first_tick_after(scheduler.utcnow()),
        })  # fmt: skip
        self.runner.wake()
        self.write_json(schedule_model(schedule))

    async def delete(self, workflow_id: str):
        workflow = await self.editable_workflow(workflow_id)
        await self.call(self.store.delete_schedule, workflow["id"])
        self.set_status(204)
        self.finish()


class TicksHandler(BaseHandler):
    async def get(self, workflow_id: str):
        """The recorded ticks of the schedule: each ran (with its run id) or was recorded as missed."""
        workflow = await self.visible_workflow(workflow_id)
        ticks = await self.call(self.store.ticks, workflow["id"])
        self.write_json({"ticks": [
            {"tick_at": iso(t["tick_at"]), "status": t["status"], "run_id": t["run_id"],
             "recorded_at": iso(t["recorded_at"])} for t in ticks
        ]})  # fmt: skip


class RunHandler(BaseHandler):
    async def get(self, run_id: str):
        run = await self.visible_run(run_id)
        self.write_json(run_model(run, self.settings["service_prefix"]))


class RunFileHandler(BaseHandler):
    """The run's executed notebook, its HTML rendering and its log.

    The HTML is served with `Content-Security-Policy: sandbox` (no script runs in the service's origin, where the
    OAuth cookie lives), to be shown in a sandboxed iframe.
    """

    async def get(self, run_id: str, kind: str):
        run = await self.visible_run(run_id)
        files = self.runner.files(run["id"])
        if kind == "notebook":
            path = files.output_notebook if files.output_notebook.exists() else files.input_notebook
            content_type = "application/x-ipynb+json"
            self.set_header("Content-Disposition", f'attachment; filename="run-{run["id"]}.ipynb"')
        elif kind == "html":
            path, content_type = files.html, "text/html; charset=UTF-8"
        else:
            path, content_type = files.log, "text/plain; charset=UTF-8"
        await self.send_file(path, content_type)

    async def send_file(self, path: Path, content_type: str) -> None:
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise ApiError(404, f"{path.name} is not available (yet) for this run") from None
        self.set_header("Content-Type", content_type)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", "sandbox")
        self.finish(data)


class OutputHandler(RunFileHandler):
    async def get(self, run_id: str, name: str):
        run = await self.visible_run(run_id)
        if name not in {output["name"] for output in run["outputs"] or ()}:
            raise ApiError(404, f"run {run['id']} has no output {name!r}")
        files = self.runner.files(run["id"])
        path = (files.directory / name).resolve()
        if not path.is_relative_to(files.directory.resolve()):
            raise ApiError(404, f"run {run['id']} has no output {name!r}")
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if not content_type.startswith("image/") or content_type == "image/svg+xml":
            filename = os.path.basename(name).replace('"', "")
            self.set_header("Content-Disposition", f'attachment; filename="{filename}"')
        await self.send_file(path, content_type)


# --- application ----------------------------------------------------------------------------------------------------


class WorkflowsService(Application):
    """The workflows service process: store, runner (with the scheduler) and the tornado app."""

    name = "desp-workflows"
    description = __doc__.split("\n")[0]

    db_url = Unicode(
        config=True,
        help="SQLAlchemy URL of the workflows store. Default: sqlite:///<cwd>/workflows.sqlite (the hub's directory).",
    )

    @default("db_url")
    def _db_url_default(self):
        return f"sqlite:///{os.path.join(os.getcwd(), 'workflows.sqlite')}"

    data_dir = Unicode(
        config=True,
        help="Directory holding each run's files (`runs/<run id>/`). Default: `workflows` in the working directory.",
    )

    @default("data_dir")
    def _data_dir_default(self):
        return os.path.join(os.getcwd(), "workflows")

    profiles_db_url = Unicode(
        "",
        config=True,
        help="SQLAlchemy URL of the profile store: a workflow's profile must exist there and be one its user may "
        "start, and its DCU price is read from there. Empty: any profile slug is accepted, runs are free.",
    )

    default_profile = Unicode("standard", config=True, help="The profile of a workflow published without one.")

    default_timeout_seconds = Integer(600, config=True, help="Timeout of a workflow published without one.")

    max_timeout_seconds = Integer(24 * 3600, config=True, help="The longest timeout a workflow may ask for.")

    @default("log_level")
    def _log_level_default(self):
        return "INFO"

    @default("log_format")
    def _log_format_default(self):
        return "[%(levelname)1.1s %(asctime)s.%(msecs).03d %(name)s] %(message)s"

    @default("log_datefmt")
    def _log_datefmt_default(self):
        return "%Y-%m-%d %H:%M:%S"

    classes = [WorkflowRunner]

    def setup(self) -> None:
        """Open (and migrate) the store, build the runner and the profile directory."""
        self.store = WorkflowStore(self.db_url)
        self.store.upgrade()
        self.profiles = ProfileDirectory(self.profiles_db_url)
        self.runner = WorkflowRunner(store=self.store, data_dir=self.data_dir, profiles=self.profiles,
                                     parent=self, log=self.log)  # fmt: skip

    def make_app(self, *, service_prefix: str = f"/services/{SERVICE_NAME}/", hub_auth: HubOAuth | None = None,
                 cookie_secret: bytes | None = None) -> web.Application:  # fmt: skip
        hub_auth = hub_auth or HubOAuth(cache_max_age=60)
        args = {"service": self}

        def route(path: str) -> str:
            return url_path_join(service_prefix, path)

        handlers: list[Any] = [
            (route("api/workflows"), WorkflowsHandler, args),
            (route("api/workflows/([^/]+)"), WorkflowHandler, args),
            (route("api/workflows/([^/]+)/versions"), VersionsHandler, args),
            (route("api/workflows/([^/]+)/versions/([^/]+)"), VersionHandler, args),
            (route("api/workflows/([^/]+)/runs"), RunsHandler, args),
            (route("api/workflows/([^/]+)/schedule"), ScheduleHandler, args),
            (route("api/workflows/([^/]+)/schedule/ticks"), TicksHandler, args),
            (route("api/runs/([^/]+)"), RunHandler, args),
            (route("api/runs/([^/]+)/(notebook|html|log)"), RunFileHandler, args),
            (route("api/runs/([^/]+)/outputs/(.+)"), OutputHandler, args),
            (route("oauth_callback"), OAuthCallbackHandler),
        ]
        handlers += self.page_handlers(route, args)
        return service_application(handlers, service_prefix=service_prefix, hub_auth=hub_auth,
                                   cookie_secret=cookie_secret, log_function=log_request)  # fmt: skip

    def page_handlers(self, route, args) -> list[Any]:
        """The web pages (`desp_hub.workflows.pages.page_handlers(route, args)`, once that module exists)."""
        if importlib.util.find_spec("desp_hub.workflows.pages") is None:
            return []
        from desp_hub.workflows.pages import page_handlers

        return page_handlers(route, args)

    def start(self) -> None:
        logging.basicConfig(level=logging.INFO, format=self.log_format, datefmt=self.log_datefmt)
        self.log = log  # one logger (and format) for the service, its runner and the access log
        self.setup()
        url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10102"))
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{SERVICE_NAME}/")
        app = self.make_app(service_prefix=prefix)

        async def serve():
            server = app.listen(url.port or 80, url.hostname or "127.0.0.1", xheaders=True,
                                max_body_size=MAX_BODY_BYTES)  # fmt: skip
            self.log.info("Workflows service listening on %s, proxied at %s", url.geturl(), prefix)
            await self.runner.start()
            # JupyterHub stops a managed service with SIGINT, then SIGTERM: handle both (a backgrounded shell's
            # child ignores SIGINT otherwise)
            stop = asyncio.Event()
            for signum in (signal.SIGINT, signal.SIGTERM):
                asyncio.get_running_loop().add_signal_handler(signum, stop.set)
            await stop.wait()
            self.log.info("Workflows service stopping")
            server.stop()
            await self.runner.stop()
            self.store.close()

        asyncio.run(serve())


def main(argv: list[str] | None = None) -> None:
    app = WorkflowsService.instance()
    app.initialize(argv)
    app.start()


if __name__ == "__main__":
    main()
