"""The chart's rendered hub configuration, loaded by the code the hub image runs, against the one-machine configuration.

The ConfigMap `helm template` renders is written to a directory (where the hub pod mounts it), and the hub image's
z2jh config file (images/hub/desp_jupyterhub_config.py, which calls desp_hub.kube_config) is executed with a fresh
`c`, as z2jh's jupyterhub_config.py executes it. The one-machine configuration is hub/desp_hub/jupyterhub_config.py,
loaded as `jupyterhub -f` loads it. For the same profiles seed, the KubeSpawner built from the first offers every
demo user exactly the `profile_list` entries that the second's profiles give (through desp_hub.kube).

No cluster: KubeSpawner reads a dummy kubeconfig (as in tests/hub/test_kube_manifests.py). The upstream charts are not
rendered (tests/helm/chart.py says why); the hub configuration comes from our own ConfigMap only.
"""

from __future__ import annotations

from pathlib import Path

import kubernetes_asyncio.config.kube_config
import pytest
import yaml
from jupyterhub.objects import Hub
from traitlets.config import Config, PyFileConfigLoader
from traitlets.config.loader import LazyConfigValue

from desp_hub.kube import kubespawner_profile_list
from desp_hub.kube_config import DespKubeSpawner
from desp_hub.profiles import entitled_profiles
from desp_hub.spawner import DespLocalSpawner
from tests.helm.chart import EXAMPLES, ROOT, render, renderable_chart
from tests.hub.test_kube_manifests import DEMO_USERS, KUBECONFIG, FakeUser

SEED = ROOT / "hub" / "desp_hub" / "profiles.yaml"
IMAGE_CONFIG = ROOT / "images" / "hub" / "desp_jupyterhub_config.py"
LOCAL_CONFIG = ROOT / "hub" / "desp_hub" / "jupyterhub_config.py"


@pytest.fixture
def kubeconfig(tmp_path, monkeypatch):
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setattr(kubernetes_asyncio.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return path


def chart_hub_config(tmp_path, monkeypatch, example: Path, overrides: dict, pod_ip: str = "") -> Config:
    """`c` after the hub image's config file ran against the ConfigMap rendered from `example` + `overrides`."""
    override_file = tmp_path / "overrides.yaml"
    override_file.write_text(yaml.safe_dump(overrides))
    manifests = render(renderable_chart(tmp_path), example, override_file)
    config_map = next(m for m in manifests if m["kind"] == "ConfigMap" and m["metadata"]["name"] == "desp-hub-config")
    mounted = tmp_path / "desp-hub-config"
    mounted.mkdir()
    for name, text in config_map["data"].items():
        (mounted / name).write_text(text)
    monkeypatch.setenv("DESP_HUB_CHART_CONFIG", str(mounted))
    if pod_ip:
        monkeypatch.setenv("POD_IP", pod_ip)
    else:
        monkeypatch.delenv("POD_IP", raising=False)
    c = Config()
    exec(compile(IMAGE_CONFIG.read_text(), str(IMAGE_CONFIG), "exec"), {"c": c})  # as z2jh runs config.d files
    return c


def local_hub_config(tmp_path, monkeypatch, accounting_url: str = "") -> Config:
    """`c` after hub/desp_hub/jupyterhub_config.py, in a data directory of its own, with the shipped seed."""
    data_dir = tmp_path / "local-hub"
    data_dir.mkdir()
    monkeypatch.chdir(data_dir)
    monkeypatch.setenv("DESP_PROFILES_SEED", str(SEED))
    monkeypatch.setenv("DESP_PROFILES_DB_URL", f"sqlite:///{data_dir / 'profiles.sqlite'}")
    monkeypatch.delenv("DESP_HUB_EXTRA_CONFIG", raising=False)
    if accounting_url:
        monkeypatch.setenv("DESP_ACCOUNTING_URL", accounting_url)  # turns the metering service on
    else:
        monkeypatch.delenv("DESP_ACCOUNTING_URL", raising=False)
    return PyFileConfigLoader(LOCAL_CONFIG.name, path=str(LOCAL_CONFIG.parent)).load_config()


def seed_values(tmp_path, seed_path=SEED) -> dict:
    """Chart overrides: the profiles seed given as chart values, stores in tmp_path (not /srv/jupyterhub)."""
    return {
        "desp": {
            "profiles": {
                "seed": yaml.safe_load(Path(seed_path).read_text())["profiles"],
                "databaseUrl": f"sqlite:///{tmp_path / 'chart-profiles.sqlite'}",
            }
        }
    }


def hub():
    return Hub(ip="hub", port=8081, base_url="/hub/")


async def kube_entries(c, username):
    spawner = c.JupyterHub.spawner_class(
        config=c, hub=hub(), user=FakeUser(username), api_token="t", oauth_client_id=f"jupyterhub-user-{username}"
    )
    return await spawner.profile_list(spawner)


async def local_entries(c, username):
    """What the one-machine configuration's profiles become as KubeSpawner entries for `username`."""
    spawner = DespLocalSpawner(config=c, hub=hub(), user=FakeUser(username))
    groups, roles = await spawner.user_groups_and_roles()
    return kubespawner_profile_list(entitled_profiles(await spawner.load_profiles(), groups, roles))


@pytest.mark.parametrize("seed_given", [True, False], ids=["seed-in-values", "seed-shipped-in-image"])
async def test_kubespawner_profiles_equal_the_local_configurations(tmp_path, monkeypatch, kubeconfig, seed_given):
    overrides = seed_values(tmp_path)
    if not seed_given:
        overrides["desp"]["profiles"]["seed"] = []  # values.yaml's default: the hub image's own seed
    chart = chart_hub_config(tmp_path, monkeypatch, EXAMPLES / "test-cluster.yaml", overrides)
    local = local_hub_config(tmp_path, monkeypatch)
    assert chart.JupyterHub.spawner_class is DespKubeSpawner
    compared = 0
    for username in DEMO_USERS:
        if username == "outsider":
            continue  # entitled to nothing: both refuse (tests/hub/test_kube_manifests.py)
        expected = await local_entries(local, username)
        assert expected, username
        assert await kube_entries(chart, username) == expected, username
        compared += 1
    assert compared == 4


async def test_a_different_seed_gives_different_profiles(tmp_path, monkeypatch, kubeconfig):
    """The comparison can fail: the test-cluster example's own seed (one small profile) is not the local one."""
    chart = chart_hub_config(
        tmp_path, monkeypatch, EXAMPLES / "test-cluster.yaml",
        {"desp": {"profiles": {"databaseUrl": f"sqlite:///{tmp_path / 'p.sqlite'}"}}},
    )
    local = local_hub_config(tmp_path, monkeypatch)
    entries = await kube_entries(chart, "admin")
    assert [e["slug"] for e in entries] == ["standard"]
    assert entries != await local_entries(local, "admin")
    assert entries[0]["kubespawner_override"]["mem_limit"] == 2 * 2**30


def resolved(value):
    """A list trait's configured value (a lazily extended one resolved against an empty default)."""
    return value.get_value([]) if isinstance(value, LazyConfigValue) else list(value)


def services_and_roles(c):
    services = {s["name"]: s for s in resolved(c.JupyterHub.services)}
    roles = {r["name"]: r for r in resolved(c.JupyterHub.load_roles)}
    return services, roles


def test_same_services_roles_and_token_scopes_as_on_one_machine(tmp_path, monkeypatch, kubeconfig):
    chart = chart_hub_config(tmp_path, monkeypatch, EXAMPLES / "production.yaml", seed_values(tmp_path),
                             pod_ip="10.1.2.3")
    local = local_hub_config(tmp_path, monkeypatch, accounting_url="https://accounting.desp.destine.eu")
    chart_services, chart_roles = services_and_roles(chart)
    local_services, local_roles = services_and_roles(local)
    # the local Dask Gateway is a hub-run service; in the cluster the dask-gateway chart runs it (z2jh declares it)
    assert set(chart_services) == set(local_services) - {"dask-gateway"}
    assert set(chart_services) == {"profiles", "culler", "metering", "dashboards", "workflows"}
    assert {name: set(role["scopes"]) for name, role in chart_roles.items()} == {
        name: set(role["scopes"]) for name, role in local_roles.items()
    }
    assert set(resolved(chart.Spawner.server_token_scopes)) == set(resolved(local.Spawner.server_token_scopes))
    # the proxy pod reaches the services on the hub pod's IP, at the chart's ports
    assert {name: s.get("url") for name, s in chart_services.items() if "url" in s} == {
        "profiles": "http://10.1.2.3:10101",
        "dashboards": "http://10.1.2.3:10102",
        "workflows": "http://10.1.2.3:10103",
    }
    # commands are the same modules as on one machine
    assert {n: s["command"][1:3] for n, s in chart_services.items()} == {
        n: s["command"][1:3] for n, s in local_services.items() if n in chart_services
    }
    authenticator = chart.DespKeycloakAuthenticator
    assert (authenticator.iam_url, authenticator.realm, authenticator.client_id) == (
        "https://auth.destine.eu", "desp", "desp-hub"
    )
    assert authenticator.allowed_groups == local.DespKeycloakAuthenticator.allowed_groups
    assert "client_secret" not in authenticator
    assert chart.JupyterHub.public_url == "https://hub.desp.destine.eu"  # the dashboards' websocket origin


async def test_servers_get_the_platform_endpoints(tmp_path, monkeypatch, kubeconfig):
    chart = chart_hub_config(tmp_path, monkeypatch, EXAMPLES / "production.yaml", seed_values(tmp_path))
    spawner = DespKubeSpawner(config=chart, hub=hub(), user=FakeUser("researcher"), api_token="t",
                              oauth_client_id="jupyterhub-user-researcher")
    env = spawner.get_env()
    assert env["DESP_CATALOGUE_URL"] == "https://hda.data.destination-earth.eu/stac/v2"
    assert env["DESP_CACHE_URL"] == "s3://desp-cache/users/researcher"
    assert env["DESP_ACCOUNTING_URL"] == "https://accounting.desp.destine.eu"
    # Gateway() and the workflows from the environment, through in-cluster Services
    assert env["DASK_GATEWAY__ADDRESS"] == "http://proxy-public/services/dask-gateway"
    assert env["DASK_GATEWAY__PROXY_ADDRESS"] == "gateway://traefik-desp-hub-dask-gateway:80"
    assert env["DASK_GATEWAY__AUTH__TYPE"] == "jupyterhub"
    assert env["DESP_WORKFLOWS_URL"] == "http://proxy-public/services/workflows/"
    assert "access:services!service=dask-gateway" in spawner.server_token_scopes
