"""The web pages of the `workflows` service, at `/services/workflows/` (next to its REST API).

- `/services/workflows/`: the caller's workflows, those shared with a group of theirs, the public ones, and a form
  to publish a notebook (upload an .ipynb: a new workflow, or a new version of the caller's workflow of that name).
- `w/<id>`: one workflow: description, versions, the parameters form (one input per declared parameter, typed from
  the `parameters` cell), Run, the schedule (owner: set an interval or a cron expression with time zone; remove it),
  and its runs.
- `runs/<id>`: one run: status (the page refreshes itself while the run is queued or running), the parameters, the
  failing cell (its source and error) when it failed, the executed notebook rendered as HTML in a sandboxed iframe
  (`api/runs/<id>/html`, itself served with `Content-Security-Policy: sandbox`), the outputs and the log.

The handlers are the API's (`BaseHandler` of `desp_hub.services.workflows_service`: identity through HubOAuth,
visibility, may_run / may_edit, profile entitlement), so a page and the API always agree on who may do what; a
workflow the caller may not see is a 404 page. Values typed into the parameters form are converted to the declared
type and checked by the same `validate` as the API, so a string stays a string. Every form carries the hub's XSRF
token; a cookie-authenticated POST without it is refused. Templates are Jinja2 with autoescape on, styled with the
hub's own stylesheet (as the profiles pages).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import nbformat
from tornado import web

from desp_hub.services.profiles_pages import TEMPLATES as SERVICES_TEMPLATES
from desp_hub.services.profiles_pages import ServicePageMixin
from desp_hub.services.profiles_service import ApiError
from desp_hub.services.workflows_service import (
    VISIBILITIES,
    BaseHandler,
    WorkflowsHandler,
    check_notebook,
    iso,
    may_edit,
    may_run,
    run_model,
    version_model,
    workflow_model,
)
from desp_hub.workflows import scheduler
from desp_hub.workflows.notebook import Parameter
from desp_hub.workflows.parameters import ParameterError, validate

__all__ = ["form_value", "page_handlers", "parse_parameter"]

TEMPLATES = Path(__file__).with_name("templates")
FLASH_COOKIE = "desp-workflows-flash"
RUNS_SHOWN = 50
LOG_TAIL_BYTES = 20_000
UNFINISHED = ("queued", "running")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
JSON_EXAMPLES = {"list": "[1, 2]", "dict": '{"a": 1}', "any": '3 or "text" or [1, 2]'}


# --- pure helpers: parameters as typed in a form -------------------------------------------------------------------


def form_value(parameter: Mapping[str, Any], value: Any) -> str:
    """A parameter's value as the form's input shows it: text as is, numbers plainly, the rest as JSON."""
    kind = parameter["type"]
    if value is None:
        return "" if kind in ("str", "int", "float") else "null"
    if kind == "str" and isinstance(value, str):
        return value
    if kind in ("int", "float") and isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    return json.dumps(value)


def parse_parameter(parameter: Mapping[str, Any], text: str | None) -> Any:
    """The value typed for a declared parameter, converted to its type (ValueError with a short reason otherwise).

    A checkbox (bool) is on when present. Numbers must be plain decimal numbers; list, dict and any are JSON. Text
    is never evaluated: a str parameter takes the text as typed.
    """
    kind = parameter["type"]
    if kind == "bool":
        return text is not None
    text = text if text is not None else ""
    if kind == "str":
        return text
    stripped = text.strip()
    if kind == "int":
        if not re.fullmatch(r"[+-]?\d+", stripped):
            raise ValueError(f"expected a whole number, got {text!r}")
        return int(stripped)
    if kind == "float":
        try:
            number = float(stripped)
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {text!r}")
        return number
    try:
        value = json.loads(stripped, parse_constant=_no_constant)
    except ValueError:
        raise ValueError(f"expected JSON, for example {JSON_EXAMPLES.get(kind, '3')}") from None
    return value


def _no_constant(name: str) -> None:
    raise ValueError(name)


def run_label(status: str) -> str:
    """Bootstrap colour of a run status badge."""
    return {"succeeded": "success", "failed": "danger", "timed_out": "warning", "running": "primary"}.get(
        status, "secondary"
    )


def describe_schedule(schedule: Mapping[str, Any] | None) -> str:
    if not schedule:
        return "no schedule"
    if schedule.get("interval_seconds"):
        timing = f"every {schedule['interval_seconds']} s"
    else:
        timing = f"cron {schedule['cron']} ({schedule['timezone']})"
    state = "" if schedule.get("enabled") else ", paused"
    return f"{timing}, missed ticks: {schedule['missed_policy'].replace('_', ' ')}{state}"


def failing_cell_view(notebook_path: Path, error: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The failing cell of an executed notebook for the run page: its number, source and error text."""
    if not error or error.get("output_cell_index") is None or not notebook_path.exists():
        return None
    try:
        notebook = nbformat.read(notebook_path, as_version=4)
        cell = notebook.cells[int(error["output_cell_index"])]
    except (OSError, ValueError, IndexError, TypeError):
        return None
    traceback = ""
    for output in cell.get("outputs") or ():
        if output.get("output_type") == "error":
            traceback = _ANSI.sub("", "\n".join(output.get("traceback") or ()))
    return {"number": (error.get("cell_index") or 0) + 1, "source": cell.get("source", ""),
            "traceback": traceback[-5000:]}  # fmt: skip


def log_tail(path: Path) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(0, 2)
            size = log.tell()
            log.seek(max(0, size - LOG_TAIL_BYTES))
            text = log.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return _ANSI.sub("", text if size <= LOG_TAIL_BYTES else "…" + text)


@cache
def jinja_environment() -> jinja2.Environment:
    """The pages' templates; autoescape is on for every template."""
    environment = jinja2.Environment(
        # workflows_base.html extends the services' base.html
        loader=jinja2.FileSystemLoader([str(TEMPLATES), str(SERVICES_TEMPLATES)]),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(form_value=lambda value, parameter: form_value(parameter, value), label=run_label)
    environment.globals.update(describe_schedule=describe_schedule)
    return environment


# --- handlers ------------------------------------------------------------------------------------------------------


class PageHandler(ServicePageMixin, BaseHandler):
    """An HTML page of the service: the API's identity and rules; errors as HTML pages (`ServicePageMixin`)."""

    flash_cookie = FLASH_COOKIE
    error_template = "workflows_error.html"

    def templates(self) -> jinja2.Environment:
        return jinja_environment()

    def page_context(self) -> dict[str, Any]:
        return {"visibilities": VISIBILITIES}

    def go(self, url: str, message: str | None = None) -> None:
        if message:
            self.flash(message)
        self.redirect(url, status=303)

    async def workflow_models(self) -> list[dict[str, Any]]:
        caller = self.caller
        workflows = await self.call(self.store.list_workflows, caller["name"], caller.get("groups") or ())
        ids = [w["id"] for w in workflows]
        latest = await self.call(self.store.latest_versions, ids)
        schedules = await self.call(self.store.schedules_of, ids)
        return [workflow_model(w, latest[w["id"]], schedules.get(w["id"]), caller) for w in workflows
                if w["id"] in latest]  # fmt: skip


class ListPage(PageHandler):
    """Mine, shared with my groups, public; and the publish form."""

    @web.authenticated
    async def get(self):
        await self.render_list(flash=self.pop_flash())

    async def render_list(self, status: int = 200, **context: Any) -> None:
        models = await self.workflow_models()
        name = self.caller["name"]
        groups = [
            ("Mine", "mine", [m for m in models if m["owner"] == name]),
            ("Shared with my groups", "shared", [m for m in models if m["owner"] != name and m["visibility"] == "group"]),
            ("Public", "public", [m for m in models if m["owner"] != name and m["visibility"] == "public"]),
        ]
        self.render_page("workflows_list.html", status=status, sections=groups, groups=self.caller.get("groups") or [],
                         form=context.pop("form", {}), **context)  # fmt: skip

    @web.authenticated
    async def post(self):
        """Publish an uploaded notebook: a new workflow, or a new version of the caller's workflow of that name."""
        form = {key: self.get_body_argument(key, "") for key in ("name", "visibility", "group", "description")}
        files = self.request.files.get("notebook") or []
        try:
            if not files:
                raise ApiError(400, "choose a notebook file (.ipynb) to publish", field="notebook")
            upload = files[0]
            name = form["name"].strip() or re.sub(r"\.ipynb$", "", Path(upload["filename"] or "notebook").name)
            try:
                content = json.loads(upload["body"].decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise ApiError(400, f"{upload['filename']} is not a notebook (not JSON)", field="notebook") from None
            notebook, sha256, parameters = check_notebook(content)
            body = {"name": name, "visibility": form["visibility"] or "private", "description": form["description"]}
            if form["group"].strip():
                body["group"] = form["group"].strip()
            fields = await WorkflowsHandler.workflow_fields(self, body, defaults=True)
            try:
                workflow = await self.call(self.store.create_workflow, self.caller["name"], fields, notebook, sha256,
                                           [p.to_dict() for p in parameters])  # fmt: skip
                message = f"Published {workflow['name']}, version 1."
            except ApiError as error:
                if error.status_code != 409:
                    raise
                workflow = await self.call(self.store.find_workflow, self.caller["name"], name)
                version, created = await self.call(self.store.add_version, workflow["id"], notebook, sha256,
                                                   [p.to_dict() for p in parameters], self.caller["name"])  # fmt: skip
                message = (f"Published version {version['number']} of {workflow['name']}." if created else
                           f"{workflow['name']} already has this notebook as version {version['number']}.")  # fmt: skip
        except ApiError as error:
            await self.render_list(form=form, message=error.message, field=error.field, status=error.status_code)
            return
        self.go(self.page_url("w", workflow["id"]), message)


class WorkflowPage(PageHandler):
    """One workflow: versions, typed parameters form with Run, schedule, runs."""

    @web.authenticated
    async def get(self, workflow_id: str):
        await self.render_workflow(workflow_id, flash=self.pop_flash())

    async def render_workflow(self, workflow_id: str, status: int = 200, **context: Any) -> None:
        workflow = await self.visible_workflow(workflow_id)
        model = await self.model(workflow)
        versions = [version_model(v) for v in await self.call(self.store.list_versions, workflow["id"])]
        runs = [run_model(r, self.prefix) for r in await self.call(self.store.list_runs, workflow["id"],
                                                                   limit=RUNS_SHOWN)]  # fmt: skip
        values = context.pop("values", None) or {
            p["name"]: form_value(p, p.get("default")) for p in model["latest_version"]["parameters"]
        }
        schedule_form = context.pop("schedule_form", None) or schedule_form_values(model["schedule"])
        self.render_page("workflows_detail.html", status=status, workflow=model, versions=versions, runs=runs,
                         values=values, schedule_form=schedule_form, errors=context.pop("errors", {}),
                         **context)  # fmt: skip


def schedule_form_values(schedule: Mapping[str, Any] | None) -> dict[str, str]:
    schedule = schedule or {}
    return {
        "kind": "cron" if schedule.get("cron") else "interval",
        "interval_seconds": str(schedule.get("interval_seconds") or ""),
        "cron": schedule.get("cron") or "",
        "timezone": schedule.get("timezone") or "UTC",
        "missed_policy": schedule.get("missed_policy") or "run_once",
    }


class RunNowPage(WorkflowPage):
    """POST w/<id>/run: the parameters form → a run of the latest version (its page next)."""

    @web.authenticated
    async def post(self, workflow_id: str):
        workflow = await self.visible_workflow(workflow_id)
        if not may_run(workflow, self.caller):
            raise ApiError(403, f"{workflow['owner']} does not let others run workflow {workflow['id']}")
        version = await self.call(self.store.latest_version, workflow["id"])
        declared = version["parameters"]
        typed = {p["name"]: self.get_body_argument(f"p.{p['name']}", None) for p in declared}
        errors: dict[str, str] = {}
        given: dict[str, Any] = {}
        for parameter in declared:
            try:
                given[parameter["name"]] = parse_parameter(parameter, typed[parameter["name"]])
            except ValueError as error:
                errors[parameter["name"]] = str(error)
        if not errors:
            try:
                values = validate([Parameter.from_dict(p) for p in declared], given)
            except ParameterError as error:
                errors[error.field.removeprefix("parameters.")] = error.message
        if errors:
            shown = {p["name"]: ("on" if typed[p["name"]] is not None else "") if p["type"] == "bool"
                     else typed[p["name"]] or "" for p in declared}  # fmt: skip
            first = next(iter(errors))
            await self.render_workflow(workflow_id, status=400, values=shown, errors=errors,
                                       message=f"Check the parameters: {first}: {errors[first]}")  # fmt: skip
            return
        await self.check_profile(workflow["profile"])
        run = await self.queue_run(workflow, version, values)
        self.go(self.page_url("runs", run["id"]), f"Run {run['id']} queued.")


class SchedulePage(WorkflowPage):
    """POST w/<id>/schedule: set (interval or cron + time zone) or, with `remove`, delete the schedule."""

    @web.authenticated
    async def post(self, workflow_id: str):
        workflow = await self.editable_workflow(workflow_id)
        if self.get_body_argument("remove", None) is not None:
            await self.call(self.store.delete_schedule, workflow["id"])
            self.go(self.page_url("w", workflow["id"]), "Schedule removed.")
            return
        form = {key: self.get_body_argument(key, "").strip()
                for key in ("kind", "interval_seconds", "cron", "timezone", "missed_policy")}  # fmt: skip
        body: dict[str, Any] = {"missed_policy": form["missed_policy"] or "run_once"}
        try:
            if form["kind"] == "cron":
                body.update(cron=form["cron"], timezone=form["timezone"] or "UTC")
            else:
                if not re.fullmatch(r"\d{1,9}", form["interval_seconds"]):
                    raise scheduler.ScheduleError("interval_seconds must be a whole number of seconds", "interval_seconds")
                body["interval_seconds"] = int(form["interval_seconds"])
            timing = scheduler.ScheduleTiming.from_request(body)
            if body["missed_policy"] not in scheduler.MISSED_POLICIES:
                raise scheduler.ScheduleError(
                    f"missed_policy must be one of {', '.join(scheduler.MISSED_POLICIES)}", "missed_policy"
                )
        except scheduler.ScheduleError as error:
            await self.render_workflow(workflow_id, status=400, schedule_form=form,
                                       errors={f"schedule.{error.field}": str(error)},
                                       message=f"Check the schedule: {error}")  # fmt: skip
            return
        await self.check_profile(workflow["profile"])
        await self.call(self.store.set_schedule, workflow["id"], {
            **timing.to_fields(), "missed_policy": body["missed_policy"], "enabled": True, "parameters": {},
            "username": self.caller["name"], "next_tick": timing.first_tick_after(scheduler.utcnow()),
        })  # fmt: skip
        self.runner.wake()
        self.go(self.page_url("w", workflow["id"]), "Schedule saved.")


class RunPage(PageHandler):
    """One run: status, parameters, failing cell, rendered notebook (sandboxed iframe), outputs, log."""

    @web.authenticated
    async def get(self, run_id: str):
        run = await self.visible_run(run_id)
        model = run_model(run, self.prefix)
        try:
            workflow = await self.call(self.store.get_workflow, run["workflow_id"])
        except ApiError:
            workflow = None
        files = self.runner.files(run["id"])
        failing = failing_cell_view(files.output_notebook, run["error"])
        self.render_page(
            "workflows_run.html",
            run=model,
            workflow=workflow,
            may_edit=bool(workflow) and may_edit(workflow, self.caller),
            has_html=files.html.exists(),
            failing=failing,
            log=log_tail(files.log),
            unfinished=run["status"] in UNFINISHED,
            flash=self.pop_flash(),
            iso=iso,
        )


def page_handlers(route: Callable[[str], str], args: Mapping[str, Any]) -> list[tuple]:
    """The pages' entries of the service's handler table; `route(path)` adds the service prefix."""
    args = dict(args)
    return [
        (route("w/([^/]+)/run"), RunNowPage, args),
        (route("w/([^/]+)/schedule"), SchedulePage, args),
        (route("w/([^/]+)/?"), WorkflowPage, args),
        (route("runs/([^/]+)/?"), RunPage, args),
        (route("").rstrip("/") + "/?", ListPage, args),
    ]

