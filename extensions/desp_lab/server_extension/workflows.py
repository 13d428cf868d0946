"""REST handler under `{base_url}desp/api/` for JupyterLab's "Publish as workflow" command.

* `POST workflows/publish` `{"path", "name"?, "visibility"?, "group"?, "description"?}` → 201 (a new workflow) or
  200 (a new version of, or the same version as, the caller's workflow of that name):
  `{"workflow", "version", "created_workflow", "created_version", "url"}`, `url` being the workflow's page.

The notebook is read through the server's contents manager (what JupyterLab shows, as saved), then sent to the hub's
workflows service (`DespLabExtension.workflows_url`, env `DESP_WORKFLOWS_URL`) with the server's own hub token
(`JUPYTERHUB_API_TOKEN`) by the `desp_lab.workflows` SDK. The service's refusals keep their status, message and
field (400 names the field); a service that cannot be reached is 502; no service configured is 404.
"""

from __future__ import annotations

import tornado.web
from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized

from desp_lab.server_extension.handlers import DespApiError, DespApiHandler

#: What `workflows/publish` answers (404) when the server has no workflows service URL.
NOT_CONFIGURED = "The workflows service is not configured in this server (DESP_WORKFLOWS_URL is not set)."
VISIBILITIES = ("private", "group", "public")


def _optional_text(body: dict, field: str, limit: int) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise DespApiError(400, f"Invalid {field}: expected text of at most {limit} characters.", field)
    return value.strip() or None


def publish_notebook(extension, notebook: dict, name: str, visibility, group, description) -> dict:
    """Publish through the SDK (blocking: runs on the thread pool); the handler's JSON answer."""
    from desp_lab.workflows import Workflows

    client = Workflows(url=extension.workflows_url, user=extension.workflows_user or None)
    published = client.publish(notebook, name, visibility=visibility, group=group, description=description)
    workflow_id = published.workflow.get("id")
    return {
        "workflow": published.workflow,
        "version": published.version,
        "created_workflow": published.created_workflow,
        "created_version": published.created_version,
        "url": f"{extension.workflows_page_url.rstrip('/')}/w/{workflow_id}",
    }


class PublishWorkflowHandler(DespApiHandler):
    """POST workflows/publish {"path", "name"?, "visibility"?, "group"?, "description"?} → the published workflow."""

    @tornado.web.authenticated
    @authorized
    async def post(self):
        if not self.extension.workflows_url:
            raise DespApiError(404, NOT_CONFIGURED)
        body = self.body_json()
        path = body.get("path")
        if not isinstance(path, str) or not path.strip().endswith(".ipynb"):
            raise DespApiError(400, "Invalid path: give the path of a notebook (.ipynb) in your files.", "path")
        path = path.strip().lstrip("/")
        name = _optional_text(body, "name", 200) or path.rsplit("/", 1)[-1][: -len(".ipynb")]
        visibility = _optional_text(body, "visibility", 20)
        if visibility is not None and visibility not in VISIBILITIES:
            raise DespApiError(400, f"Invalid visibility: choose one of {', '.join(VISIBILITIES)}.", "visibility")
        group = _optional_text(body, "group", 200)
        description = _optional_text(body, "description", 2000)
        try:
            model = await ensure_async(self.contents_manager.get(path, content=True, type="notebook"))
        except tornado.web.HTTPError as error:
            if error.status_code == 404:
                raise DespApiError(404, f"No notebook {path!r} in your files.", "path") from None
            raise DespApiError(400, f"Invalid path: {path!r} cannot be read as a notebook.", "path") from None
        answer = await self.run_sdk(publish_notebook, self.extension, model["content"], name, visibility, group,
                                    description)  # fmt: skip
        self.write_json(answer, status=201 if answer["created_workflow"] else 200)


def workflows_handlers() -> list[tuple[str, type]]:
    """(pattern relative to base_url, handler class) of the workflows endpoint (before the catch-all)."""
    return [(r"desp/api/workflows/publish/?", PublishWorkflowHandler)]
