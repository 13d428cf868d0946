"""install_workflows_service: the service entry, its scope-less role, access for users and servers, and a command
line the service reads back into the same settings."""

from traitlets.config import Config

from desp_hub.services.install import install_workflows_service
from desp_hub.services.workflows_service import WorkflowsService


def installed(**options):
    c = Config()
    c.JupyterHub.load_roles = [{"name": "user", "scopes": ["self", "admin:auth_state!user"]}]
    c.JupyterHub.services = []
    c.Spawner.server_token_scopes = ["users:activity!user"]
    install_workflows_service(c, **options)
    return c


def test_roles_scopes_and_server_environment(monkeypatch):
    monkeypatch.setenv("DESP_METERING_CLIENT_SECRET", "do-not-copy")
    c = installed(port=1234, accounting_url="http://acc", token_url="http://idp/token")
    (service,) = c.JupyterHub.services
    assert service["name"] == "workflows" and service["url"] == "http://127.0.0.1:1234"
    assert service["oauth_no_confirm"] is True
    assert service["oauth_client_allowed_scopes"] == ["admin:auth_state!user"]  # a browser user's own token
    roles = {role["name"]: role for role in c.JupyterHub.load_roles}
    assert roles["workflows-service"]["scopes"] == []  # callers are identified with their own tokens
    assert roles["user"]["scopes"] == ["self", "admin:auth_state!user", "access:services!service=workflows"]
    assert c.Spawner.server_token_scopes == ["users:activity!user", "access:services!service=workflows"]
    assert c.Spawner.environment.to_dict()["update"] == {
        "DESP_WORKFLOWS_URL": "http://127.0.0.1:1234/services/workflows/"
    }
    # the client secret is read from the hub's environment when the service starts, never kept in the config
    secret = service["environment"]["DESP_METERING_CLIENT_SECRET"]
    assert "do-not-copy" not in repr(service) and secret(None) == "do-not-copy"
    installed_twice = installed(port=1234)
    install_workflows_service(installed_twice, port=1234)
    assert [s["name"] for s in installed_twice.JupyterHub.services] == ["workflows"]
    assert installed_twice.Spawner.server_token_scopes.count("access:services!service=workflows") == 1


def test_the_service_reads_its_command_line_back():
    c = installed(db_url="sqlite:////srv/w.sqlite", data_dir="/srv/runs", profiles_db_url="sqlite:////srv/p.sqlite",
                  trace_url="http://traces", accounting_url="http://acc", token_url="http://idp/token",
                  run_env={"DESP_CACHE_URL": "/cache/{username}", "DESP_CATALOGUE_URL": "http://c/stac?a=b"},
                  max_concurrent_runs=3, max_concurrent_runs_per_user=1, missed_tick_grace_seconds=5,
                  port=1234)  # fmt: skip
    command = c.JupyterHub.services[0]["command"]
    assert command[1:3] == ["-m", "desp_hub.services.workflows_service"]
    app = WorkflowsService()
    app.initialize(command[3:])
    assert (app.db_url, app.data_dir, app.profiles_db_url) == ("sqlite:////srv/w.sqlite", "/srv/runs",
                                                               "sqlite:////srv/p.sqlite")  # fmt: skip
    runner = app.config.WorkflowRunner
    assert runner.run_env == {"DESP_CACHE_URL": "/cache/{username}", "DESP_CATALOGUE_URL": "http://c/stac?a=b"}
    assert (runner.max_concurrent_runs, runner.max_concurrent_runs_per_user) == (3, 1)
    assert runner.missed_tick_grace_seconds == 5.0
    assert (runner.trace_url, runner.accounting_url, runner.token_url) == ("http://traces", "http://acc",
                                                                           "http://idp/token")  # fmt: skip
