"""helm/desp-hub: `helm lint` and `helm template` for both example values files, every rendered manifest valid for
Kubernetes (kubernetes-validate, strict), and misplaced or wrong values refused by values.schema.json.

Upstream charts: not obtainable here, so our templates are rendered without them (tests/helm/chart.py says why and
how); `test_dependencies_are_declared` keeps them declared for `helm dependency build` where their repositories are
reachable.
"""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
import yaml

from tests.helm.chart import CHART, EXAMPLES, NAMESPACE, dependencies_vendored, helm, render, renderable_chart

K8S_VERSION = "1.34"  # as tests/hub/test_kube_manifests.py
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))


def test_both_examples_exist():
    assert [p.name for p in EXAMPLE_FILES] == ["production.yaml", "test-cluster.yaml"]


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_lint_passes(tmp_path, example):
    result = helm("lint", "--strict", str(renderable_chart(tmp_path)), "-f", str(example))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_every_rendered_manifest_validates_strictly(tmp_path, example):
    manifests = render(renderable_chart(tmp_path), example)
    kinds = sorted(f"{m['kind']}/{m['metadata']['name']}" for m in manifests)
    assert {"ConfigMap/desp-hub-config", "NetworkPolicy/desp-hub-services", "Role/desp-hub-secret-owner",
            "RoleBinding/desp-hub-secret-owner", "NetworkPolicy/desp-singleuser-dask-gateway"} <= set(kinds)
    for manifest in manifests:
        kubernetes_validate.validate(manifest, desired_version=K8S_VERSION, strict=True)


def by_name(manifests, kind, name):
    return next(m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name)


def test_configmap_carries_the_desp_values_and_the_seed(tmp_path):
    example = EXAMPLES / "test-cluster.yaml"
    values = yaml.safe_load(example.read_text())["desp"]
    config = by_name(render(renderable_chart(tmp_path), example), "ConfigMap", "desp-hub-config")
    desp = yaml.safe_load(config["data"]["desp.yaml"])
    assert desp == {k: v for k, v in values.items() if k != "networkPolicy"}
    assert yaml.safe_load(config["data"]["profiles.yaml"]) == {"profiles": values["profiles"]["seed"]}
    # no secret travels through the ConfigMap
    assert "secret" not in config["data"]["desp.yaml"].lower()


def test_network_policies_follow_the_service_ports_and_switches(tmp_path):
    chart = renderable_chart(tmp_path)
    example = EXAMPLES / "production.yaml"
    manifests = render(chart, example, extra=("--set", "desp.services.dashboards.port=12000"))
    hub = by_name(manifests, "NetworkPolicy", "desp-hub-services")
    assert hub["spec"]["podSelector"]["matchLabels"] == {"app": "jupyterhub", "component": "hub", "release": "desp-hub"}
    proxy_rule, gateway_rule = hub["spec"]["ingress"]
    assert proxy_rule["from"][0]["podSelector"]["matchLabels"]["component"] == "proxy"
    assert [p["port"] for p in proxy_rule["ports"]] == [10101, 12000, 10103]
    assert gateway_rule["ports"] == [{"port": 8081, "protocol": "TCP"}]

    manifests = render(chart, example, extra=("--set", "desp.services.workflows.enabled=false",
                                              "--set", "desp.daskGateway.enabled=false"))
    hub = by_name(manifests, "NetworkPolicy", "desp-hub-services")
    assert [[p["port"] for p in rule["ports"]] for rule in hub["spec"]["ingress"]] == [[10101, 10102]]
    assert not any(m["metadata"]["name"] == "desp-singleuser-dask-gateway" for m in manifests)

    manifests = render(chart, example, extra=("--set", "desp.networkPolicy.enabled=false"))
    assert not any(m["kind"] == "NetworkPolicy" for m in manifests)


def test_hub_role_only_adds_patch_on_secrets_for_the_hub_account(tmp_path):
    manifests = render(renderable_chart(tmp_path), EXAMPLES / "test-cluster.yaml")
    assert by_name(manifests, "Role", "desp-hub-secret-owner")["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["patch"]}
    ]
    binding = by_name(manifests, "RoleBinding", "desp-hub-secret-owner")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hub", "namespace": NAMESPACE}]


def refused(tmp_path, name, text):
    """helm template's failure output for the test-cluster example plus a values file holding `text`."""
    wrong = tmp_path / f"{name}.yaml"
    wrong.write_text(text)
    chart = renderable_chart(tmp_path)
    result = helm("template", "x", str(chart), "-f", str(EXAMPLES / "test-cluster.yaml"), "-f", str(wrong),
                  check=False)
    assert result.returncode != 0, f"{name} was accepted"
    return result.stderr


@pytest.mark.parametrize(
    "name, text, where",
    [
        # `realm` belongs under desp.keycloak, not desp
        ("misplaced-key", "desp:\n  realm: desp\n", "/desp"),
        ("misspelled-key", "desp:\n  keycloak:\n    clientID: hub\n", "/desp/keycloak"),
        ("unknown-top-level-key", "despp:\n  keycloak: {}\n", ""),
        ("profile-field-misspelled", "desp:\n  profiles:\n    seed:\n      - {slug: s, display_name: S, "
         "image: i, cpu_guarantee: 1, cpu_limit: 1, mem_guarantee: 1G, mem_limit: 1G, gpu: 1}\n",
         "/desp/profiles/seed/0"),
        ("wrong-type", "desp:\n  services:\n    profiles:\n      port: eighty\n", "/desp/services/profiles/port"),
        ("not-a-url", "desp:\n  keycloak:\n    iamUrl: auth.destine.eu\n", "/desp/keycloak/iamUrl"),
    ],
)
def test_schema_refuses_wrong_values(tmp_path, name, text, where):
    error = refused(tmp_path, name, text)
    assert "values don't meet the specifications of the schema" in error
    assert f"at '{where}" in error or (where == "" and "additional properties 'despp' not allowed" in error), error


def test_schema_describes_every_key_and_closes_our_objects():
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False

    def walk(node, path):
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False or path in ("", ), path
            for key, child in node["properties"].items():
                assert child.get("description"), f"{path}/{key} has no description"
                walk(child, f"{path}/{key}")
        if node.get("type") == "array" and isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(schema["properties"]["desp"], "/desp")


def test_default_values_match_the_schema_except_the_required_iam_url(tmp_path):
    """values.yaml alone lacks only what a deployment must say: the Keycloak URL."""
    result = helm("template", "x", str(renderable_chart(tmp_path)), check=False)
    assert result.returncode != 0
    assert "at '/desp/keycloak/iamUrl'" in result.stderr
    helm("template", "x", str(renderable_chart(tmp_path)), "--set", "desp.keycloak.iamUrl=https://auth.example")


def test_dependencies_are_declared():
    """The upstream charts stay declared (name, version, repository) for `helm dependency build`; without them
    vendored, helm refuses the chart as it is, which is why the other tests render a copy."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert [(d["name"], d["repository"]) for d in chart["dependencies"]] == [
        ("jupyterhub", "https://hub.jupyter.org/helm-chart/"),
        ("dask-gateway", "https://helm.dask.org/"),
    ]
    assert all(d["version"] for d in chart["dependencies"])
    if not dependencies_vendored():
        result = helm("template", "x", str(CHART), "-f", str(EXAMPLES / "test-cluster.yaml"), check=False)
        assert result.returncode != 0
        assert "missing in charts/ directory: jupyterhub, dask-gateway" in result.stderr
