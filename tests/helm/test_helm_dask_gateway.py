"""helm/desp-hub's part of the Dask Gateway: the dask-gateway chart's gateway runs DESP's backend and authenticator
from the hub image, with DESP's settings as data.

Our chart renders the ConfigMap `desp-dask-gateway-config` (the gateway's settings from the `desp` values) and a Role
letting the gateway's API ServiceAccount read worker pods; values.yaml hands the ConfigMap's keys and the secrets to
the gateway's pod (`dask-gateway.gateway.env`) and runs one call in its configuration (`gateway.extraConfig`). The
upstream chart itself cannot be rendered here (tests/helm/chart.py): what it does with these values (auth `custom`:
class and config set on the configuration; extraConfig appended to its configuration file) is reproduced from its
documented behaviour, and the rendered ConfigMap, taken as the pod's environment, is read by the real
`configure_gateway`.
"""

from __future__ import annotations

import importlib
import json

import pytest
import yaml
from traitlets.config import Config

from desp_hub.dask_gateway.chart_config import AUTHENTICATOR_CLASS, BACKEND_CLASS
from desp_hub.dask_gateway.kube_backend import DespKubeBackend, DespKubeClusterConfig
from tests.helm.chart import CHART, EXAMPLES, NAMESPACE, helm, render, renderable_chart

VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
GATEWAY = VALUES["dask-gateway"]["gateway"]


def by_name(manifests, kind, name):
    return next(m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name)


def gateway_environment(tmp_path, example, *extra):
    """The gateway pod's environment from the rendered ConfigMap, as `gateway.env` maps it (secrets left out)."""
    manifests = render(renderable_chart(tmp_path), example, extra=extra)
    data = by_name(manifests, "ConfigMap", "desp-dask-gateway-config")["data"]
    environment = {}
    for entry in GATEWAY["env"]:
        reference = entry["valueFrom"].get("configMapKeyRef")
        if reference:
            assert reference["name"] == "desp-dask-gateway-config"
            environment[entry["name"]] = data[reference["key"]]
    return environment, data


def test_the_configmap_holds_the_gateways_settings_from_the_desp_values(tmp_path):
    example = EXAMPLES / "production.yaml"
    desp = yaml.safe_load(example.read_text())["desp"]
    _, data = gateway_environment(tmp_path, example)
    assert data == {
        "DESP_DASK_ROLE_LIMITS": "",  # empty: the image's stack-dask-low|medium|high
        "DESP_DASK_PROFILE_LIMITS": json.dumps(desp["daskGateway"]["profileLimits"], separators=(",", ":")),
        "DESP_DASK_DCU_PER_CORE_HOUR": "1",
        "DESP_DASK_METERING_INTERVAL": "300",
        "DESP_DASK_USAGE_DB_URL": desp["daskGateway"]["usageDatabaseUrl"],
        "DESP_ACCOUNTING_URL": desp["endpoints"]["accountingUrl"],
        "DESP_METERING_TOKEN_URL": desp["services"]["metering"]["tokenUrl"],
        "DESP_METERING_CLIENT_ID": "desp-metering",
    }
    assert "secret" not in json.dumps(data).lower() and "password" not in json.dumps(data).lower()
    # metering off: no accounting URL for the gateway either, whatever desp.endpoints says
    _, data = gateway_environment(tmp_path, example, "--set", "desp.services.metering.enabled=false",
                                  "--set-json", "desp.daskGateway.dcuPerCoreHour=2.5")  # fmt: skip
    assert (data["DESP_ACCOUNTING_URL"], data["DESP_DASK_DCU_PER_CORE_HOUR"]) == ("", "2.5")


def test_every_gateway_setting_reaches_the_pod_and_secrets_come_from_secrets(tmp_path):
    environment, data = gateway_environment(tmp_path, EXAMPLES / "test-cluster.yaml")
    assert set(environment) == set(data)  # every key of the ConfigMap is an environment variable of the gateway
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in GATEWAY["env"] if "secretKeyRef" in e["valueFrom"]}
    assert secrets == {
        "JUPYTERHUB_API_TOKEN": {"name": "hub", "key": "hub.services.dask-gateway.apiToken"},  # z2jh generates it
        "DESP_METERING_CLIENT_SECRET": {"name": "desp-hub-secrets", "key": "metering-client-secret", "optional": True},
        "PGPASSWORD": {"name": "desp-hub-secrets", "key": "database-password", "optional": True},
    }
    assert all("value" not in entry for entry in GATEWAY["env"])  # no literal value, secret or not, in the values


def test_the_gateway_runs_the_hub_image_with_desps_authenticator_and_one_line_of_python():
    hub_image = VALUES["jupyterhub"]["hub"]["image"]
    assert GATEWAY["image"] == hub_image  # it holds desp_hub and dask-gateway-server
    assert GATEWAY["auth"]["type"] == "custom" and GATEWAY["auth"]["custom"]["class"] == AUTHENTICATOR_CLASS
    module, name = AUTHENTICATOR_CLASS.rsplit(".", 1)
    authenticator = getattr(importlib.import_module(module), name)
    assert set(GATEWAY["auth"]["custom"]["config"]) <= set(authenticator.class_trait_names(config=True))
    [line] = GATEWAY["extraConfig"]["desp"].strip().splitlines()
    assert line == "from desp_hub.dask_gateway.chart_config import configure_gateway; configure_gateway(c)"


def test_the_charts_configuration_with_the_rendered_environment_is_desps_gateway(tmp_path, monkeypatch):
    """What the dask-gateway chart's configuration file does with our values, then our extraConfig line, in the
    gateway pod's environment: DespKubeBackend with the example's limits, price and metering."""
    example = EXAMPLES / "test-cluster.yaml"
    environment, _ = gateway_environment(tmp_path, example)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    config = Config()
    config.DaskGateway.backend_class = "dask_gateway_server.backends.kubernetes.KubeBackend"  # the chart's
    custom = GATEWAY["auth"]["custom"]
    config.DaskGateway.authenticator_class = custom["class"]
    config[custom["class"].rsplit(".", 1)[1]].update(custom["config"])
    exec(GATEWAY["extraConfig"]["desp"], {"c": config})  # noqa: S102 (the chart's extraConfig, as the chart runs it)

    assert config.DaskGateway.backend_class == BACKEND_CLASS
    assert config.DaskGateway.authenticator_class == AUTHENTICATOR_CLASS
    assert config.DespJupyterHubAuthenticator.jupyterhub_api_url == "http://hub:8081/hub/api"
    backend = DespKubeBackend(config=config)
    role_limits = yaml.safe_load(example.read_text())["desp"]["daskGateway"]["roleLimits"]
    assert backend.limits.role_limits == role_limits
    assert backend.limits.limits_for("u", ["stack-dask-low"]).max_workers == 1
    assert backend.metering.enabled is False  # the test cluster has no accounting service
    cluster = DespKubeClusterConfig(parent=backend)
    assert (cluster.dcu_per_core_hour, cluster.metering_interval_seconds) == (1.0, 300)


def test_the_gateways_account_may_read_worker_pods_and_nothing_else(tmp_path):
    chart = renderable_chart(tmp_path)
    manifests = render(chart, EXAMPLES / "production.yaml")
    role = by_name(manifests, "Role", "desp-dask-gateway-worker-pods")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
    binding = by_name(manifests, "RoleBinding", "desp-dask-gateway-worker-pods")
    assert binding["roleRef"]["name"] == "desp-dask-gateway-worker-pods"
    # the dask-gateway chart's API account for the release `desp-hub`: api-<release>-dask-gateway
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "api-desp-hub-dask-gateway",
                                    "namespace": NAMESPACE}]  # fmt: skip

    manifests = render(chart, EXAMPLES / "production.yaml", extra=(
        "--set", "desp.daskGateway.gatewayServiceAccount=dask-api"))  # fmt: skip
    assert by_name(manifests, "RoleBinding", "desp-dask-gateway-worker-pods")["subjects"][0]["name"] == "dask-api"

    manifests = render(chart, EXAMPLES / "production.yaml", extra=("--set", "desp.daskGateway.enabled=false"))
    names = {m["metadata"]["name"] for m in manifests}
    assert not names & {"desp-dask-gateway-config", "desp-dask-gateway-worker-pods"}


@pytest.mark.parametrize(
    "name, text, where",
    [
        ("role-missing-a-limit", "desp:\n  daskGateway:\n    roleLimits:\n      r: {max_workers: 2}\n",
         "/desp/daskGateway/roleLimits/r"),
        ("profile-limit-misspelled", "desp:\n  daskGateway:\n    profileLimits:\n      p: {max_wrokers: 1}\n",
         "/desp/daskGateway/profileLimits/p"),
        ("negative-price", "desp:\n  daskGateway:\n    dcuPerCoreHour: -1\n", "/desp/daskGateway/dcuPerCoreHour"),
        ("not-a-database-url", "desp:\n  daskGateway:\n    usageDatabaseUrl: mysql://db/dask\n",
         "/desp/daskGateway/usageDatabaseUrl"),
        ("unknown-gateway-key", "desp:\n  daskGateway:\n    pricePerCore: 1\n", "/desp/daskGateway"),
        ("limit-not-whole", "desp:\n  daskGateway:\n    profileLimits:\n      p: {max_workers: 1.5}\n",
         "/desp/daskGateway/profileLimits/p/max_workers"),
    ],
)  # fmt: skip
def test_schema_refuses_wrong_gateway_values(tmp_path, name, text, where):
    wrong = tmp_path / f"{name}.yaml"
    wrong.write_text(text)
    result = helm("template", "x", str(renderable_chart(tmp_path)), "-f", str(EXAMPLES / "test-cluster.yaml"),
                  "-f", str(wrong), check=False)  # fmt: skip
    assert result.returncode != 0, f"{name} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert f"at '{where}" in result.stderr, result.stderr
