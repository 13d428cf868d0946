"""The desp_lab server extension's `POST /desp/api/workflows/publish` and the `desp_lab.workflows` SDK, on the user
server's side: a real `jupyter server` with the extension, its refusals before anything is sent (no service
configured, not a notebook, a missing file, a bad visibility) and a workflows service that cannot be reached.

Publishing for real (the service behind the hub, the server's hub token) is tested through the hub in
tests/e2e/test_workflows_pages.py and in the browser in tests/browser/test_workflows_browser.py.
"""

from __future__ import annotations

import nbformat
import pytest

from desp_lab.errors import DespError, ServiceUnavailable
from desp_lab.workflows import Workflows, read_notebook
from tests.lab.test_server_extension import LabServer, assert_error
from tests.support import free_port


def write_notebook(directory, name="analysis.ipynb"):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("threshold = 1.5")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell("print(threshold)")]
    nbformat.write(nb, directory / name)
    return nb


@pytest.fixture(scope="module")
def down_server(tmp_path_factory):
    """The workflows service URL points at a closed port (the service is down)."""
    directory = tmp_path_factory.mktemp("lab-workflows-down")
    write_notebook(directory)
    (directory / "notes.txt").write_text("not a notebook")
    server = LabServer(
        directory,
        {
            "DESP_WORKFLOWS_URL": f"http://127.0.0.1:{free_port()}/services/workflows/",
            "JUPYTERHUB_API_TOKEN": "hub-token-of-this-server",
            "JUPYTERHUB_USER": "researcher",
        },
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def unconfigured_server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("lab-workflows-none")
    write_notebook(directory)
    server = LabServer(directory, {})
    yield server
    server.stop()


def test_without_a_workflows_service_publishing_is_404_and_says_why(unconfigured_server):
    message = assert_error(unconfigured_server.api("POST", "workflows/publish", {"path": "analysis.ipynb"}), 404)
    assert "DESP_WORKFLOWS_URL" in message


@pytest.mark.parametrize(
    "body, field",
    [
        pytest.param({}, "path", id="no-path"),
        pytest.param({"path": "notes.txt"}, "path", id="not-a-notebook"),
        pytest.param({"path": 3}, "path", id="path-not-text"),
        pytest.param({"path": "analysis.ipynb", "visibility": "everyone"}, "visibility", id="bad-visibility"),
        pytest.param({"path": "analysis.ipynb", "name": ["x"]}, "name", id="name-not-text"),
        pytest.param({"path": "analysis.ipynb", "name": "n" * 201}, "name", id="name-too-long"),
    ],
)
def test_bad_requests_name_the_field(down_server, body, field):
    assert_error(down_server.api("POST", "workflows/publish", body), 400, field)


def test_a_missing_notebook_is_404(down_server):
    assert_error(down_server.api("POST", "workflows/publish", {"path": "missing.ipynb"}), 404, "path")


def test_a_path_outside_the_root_folder_is_refused(down_server):
    status, body = down_server.api("POST", "workflows/publish", {"path": "../../etc/passwd.ipynb"})
    assert status in (400, 403, 404), body
    assert set(body) == {"message", "field"} and "root:" not in body["message"]


def test_a_service_that_does_not_answer_is_502(down_server):
    message = assert_error(down_server.api("POST", "workflows/publish", {"path": "analysis.ipynb"}), 502)
    assert "workflows service" in message and "hub-token-of-this-server" not in message


def test_publishing_needs_the_servers_own_authentication(down_server):
    status, body = down_server.api("POST", "workflows/publish", {"path": "analysis.ipynb"}, token=None)
    assert status in (401, 403), body


def test_sdk_reads_a_notebook_file_and_refuses_what_is_not_one(tmp_path):
    nb = write_notebook(tmp_path)
    assert read_notebook(tmp_path / "analysis.ipynb")["cells"][0]["source"] == nb.cells[0].source
    assert read_notebook(nb) == read_notebook(tmp_path / "analysis.ipynb")  # same content from a dict or a file
    (tmp_path / "bad.ipynb").write_text("{not json")
    with pytest.raises(DespError, match="not a notebook") as refused:
        read_notebook(tmp_path / "bad.ipynb")
    assert refused.value.status == 400 and refused.value.field == "notebook"


def test_sdk_without_a_service_or_token_says_what_is_missing(monkeypatch):
    monkeypatch.delenv("DESP_WORKFLOWS_URL", raising=False)
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)
    with pytest.raises(DespError, match="DESP_WORKFLOWS_URL"):
        Workflows()
    client = Workflows(url=f"http://127.0.0.1:{free_port()}/services/workflows/")
    with pytest.raises(DespError, match="JUPYTERHUB_API_TOKEN") as refused:
        client.list()
    assert refused.value.status == 401
    with pytest.raises(ServiceUnavailable):
        Workflows(url=client.url, token="t").list()
