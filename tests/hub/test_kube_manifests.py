"""KubeSpawner profile entries and pod manifests, rendered offline and validated against Kubernetes schemas.

No cluster: KubeSpawner reads a dummy kubeconfig and the Kubernetes API (`spawner.api`) is replaced by a recorder,
the network edge. Everything else (profile list callable, overrides, pod rendering, hooks) is the real code.
"""

from pathlib import Path
from types import SimpleNamespace

import jupyterhub
import kubernetes_asyncio.config.kube_config
import kubernetes_validate
import kubespawner
import pytest
import yaml
from jupyterhub.objects import Hub
from kubernetes_asyncio.client import ApiClient, V1Container, V1EnvVar, V1EnvVarSource, V1ObjectMeta, V1Pod, V1PodSpec
from kubernetes_asyncio.client import V1SecretKeySelector
from kubernetes_asyncio.client.exceptions import ApiException
from kubespawner import KubeSpawner

from desp_hub.kube import (
    entitled_profile_list,
    is_secret_env_name,
    kubespawner_profile,
    kubespawner_profile_list,
    move_secret_env,
    own_secret_env,
    store_secret_env,
)
from desp_hub.profiles import NotEntitled, load_profiles

HERE = Path(__file__).resolve().parent
SEED = HERE.parents[1] / "hub" / "desp_hub" / "profiles.yaml"
K8S_VERSION = "1.34"  # shipped by kubernetes-validate 1.37 (it carries 1.2x ... 1.37)
TOKEN = "hub-api-token-that-must-stay-secret"
NAMESPACE = "desp-users"
GiB = 2**30

# Groups and realm roles of the sandbox realm's demo users (sandbox/desp_sandbox/realm/desp-realm.json).
DEMO_USERS = {
    "researcher": (["desp-users"], ["default-roles-desp", "desp-user"]),
    "poweruser": (["desp-users", "power-users"], ["default-roles-desp", "desp-user"]),
    "aiuser": (["desp-users", "ai-users"], ["default-roles-desp", "desp-user"]),
    "admin": (["desp-users", "hub-admins"], ["default-roles-desp", "desp-user", "hub-admin"]),
    "outsider": ([], ["default-roles-desp"]),
}

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: offline
  cluster: {server: "https://127.0.0.1:9"}
users:
- name: offline
  user: {token: not-a-real-token}
contexts:
- name: offline
  context: {cluster: offline, user: offline, namespace: desp-users}
current-context: offline
"""


class FakeUser:
    """What KubeSpawner and JupyterHub's Spawner read from a user: name, url, groups, auth_state.

    By default the groups are JupyterHub groups and the roles sit in the userinfo claims; with `recorded=True`
    both are where the DESP authenticator records them (auth_state `groups` and `roles`) and the hub has none.
    """

    def __init__(self, name, recorded=False):
        groups, roles = DEMO_USERS[name]
        self.name = self.escaped_name = name
        self.id = 1
        self.url = f"/user/{name}/"
        self.groups = [] if recorded else [SimpleNamespace(name=group) for group in groups]
        self._auth_state = {"oauth_user": {"preferred_username": name, "realm_access": {"roles": roles}}}
        if recorded:
            self._auth_state.update(groups=groups, roles=roles, access_token="kc-access-token")

    async def get_auth_state(self):
        return self._auth_state


class RecordingCoreV1Api:
    """Stands in for the Kubernetes API: records calls, optionally answering one call with an error status."""

    def __init__(self, fail=None):
        self.calls = []
        self.fail = dict(fail or {})  # method name -> HTTP status, raised once

    def _record(self, method, *args):
        self.calls.append((method, *args))
        if method in self.fail:
            raise ApiException(status=self.fail.pop(method), reason="fake")

    async def create_namespaced_secret(self, namespace, body):
        self._record("create_namespaced_secret", namespace, body)

    async def delete_namespaced_secret(self, name, namespace):
        self._record("delete_namespaced_secret", name, namespace)

    async def patch_namespaced_secret(self, name, namespace, body):
        self._record("patch_namespaced_secret", name, namespace, body)


@pytest.fixture
def kubeconfig(tmp_path, monkeypatch):
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(path))
    # kubernetes_asyncio reads KUBECONFIG once, at import time, into this default.
    monkeypatch.setattr(kubernetes_asyncio.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a pod: no in-cluster config
    return path


@pytest.fixture(scope="module")
def profiles():
    return load_profiles(SEED)


@pytest.fixture
def make_spawner(kubeconfig, profiles):
    """Build a KubeSpawner for a demo user, configured as the hub will be (inside the running event loop)."""

    def make(username, source=None, recorded=False):
        spawner = KubeSpawner(
            hub=Hub(ip="hub", port=8081, base_url="/hub/"),
            user=FakeUser(username, recorded),
            api_token=TOKEN,
            oauth_client_id=f"jupyterhub-user-{username}",
            namespace=NAMESPACE,
            profile_list=entitled_profile_list(source or (lambda: profiles)),
            modify_pod_hook=store_secret_env,
            after_pod_created_hook=own_secret_env,
        )
        spawner.api = RecordingCoreV1Api()
        return spawner

    return make


async def serialize(obj):
    async with ApiClient() as client:
        return client.sanitize_for_serialization(obj)


async def render(spawner, slug):
    """(raw pod from KubeSpawner, pod after the modify_pod_hook), both as plain dicts, as `start()` would make them."""
    spawner.user_options = {"profile": slug}
    await spawner.load_user_options()
    pod = await spawner.get_pod_manifest()
    raw = await serialize(pod)
    final = await serialize(await spawner.modify_pod_hook(spawner, pod))
    return raw, final


def env_of(manifest):
    return {var["name"]: var for var in manifest["spec"]["containers"][0]["env"]}


def plain_secrets(manifest):
    """Names of env vars that look like credentials and carry a plain value."""
    return sorted(
        var["name"]
        for container in manifest["spec"].get("initContainers", []) + manifest["spec"]["containers"]
        for var in container.get("env", [])
        if is_secret_env_name(var["name"]) and var.get("value")
    )


@pytest.mark.parametrize("slug", ["standard", "power", "ai"])
async def test_every_seeded_profile_renders_a_valid_pod(make_spawner, profiles, slug):
    profile = next(p for p in profiles if p.slug == slug)
    spawner = make_spawner("admin")
    _raw, pod = await render(spawner, slug)

    kubernetes_validate.validate(pod, desired_version=K8S_VERSION, strict=True)
    container = pod["spec"]["containers"][0]
    assert container["image"] == profile.image
    gpu = {"nvidia.com/gpu": str(profile.gpus)} if profile.gpus else {}
    assert container["resources"] == {
        "limits": {"cpu": profile.cpu_limit, "memory": profile.mem_limit, **gpu},
        "requests": {"cpu": profile.cpu_guarantee, "memory": profile.mem_guarantee, **gpu},
    }
    assert pod["spec"].get("nodeSelector", {}) == dict(profile.node_selector)
    assert pod["spec"].get("tolerations", []) == [dict(t) for t in profile.tolerations]
    env = env_of(pod)
    assert env["DESP_PROFILE"]["value"] == slug
    assert env["MEM_LIMIT"]["value"] == str(profile.mem_limit)
    assert plain_secrets(pod) == []
    assert TOKEN not in str(pod)

    # The Secret the hook created validates too and holds exactly what left the pod.
    [(method, namespace, secret)] = spawner.api.calls
    assert (method, namespace) == ("create_namespaced_secret", NAMESPACE)
    secret = await serialize(secret)
    kubernetes_validate.validate(secret, desired_version=K8S_VERSION, strict=True)
    assert secret["metadata"]["name"] == "jupyter-admin-env"
    assert secret["stringData"] == {"JUPYTERHUB_API_TOKEN": TOKEN, "JPY_API_TOKEN": TOKEN}


async def test_ai_pod_manifest_matches_expected(make_spawner):
    _raw, pod = await render(make_spawner("aiuser"), "ai")
    expected = yaml.safe_load((HERE / "expected_ai_pod.yaml").read_text())
    expected["metadata"]["annotations"].update(
        {
            "hub.jupyter.org/kubespawner-version": kubespawner.__version__,
            "hub.jupyter.org/jupyterhub-version": jupyterhub.__version__,
        }
    )
    assert pod == expected


async def test_kubespawner_alone_puts_the_api_token_in_plain_env(make_spawner):
    """KubeSpawner 7.1 writes Spawner.get_env() verbatim (jupyterhub/kubespawner#398): why the hooks exist."""
    raw, pod = await render(make_spawner("aiuser"), "ai")
    assert env_of(raw)["JUPYTERHUB_API_TOKEN"] == {"name": "JUPYTERHUB_API_TOKEN", "value": TOKEN}
    assert plain_secrets(raw) == ["JPY_API_TOKEN", "JUPYTERHUB_API_TOKEN"]
    assert env_of(pod)["JUPYTERHUB_API_TOKEN"] == {
        "name": "JUPYTERHUB_API_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "jupyter-aiuser-env", "key": "JUPYTERHUB_API_TOKEN"}},
    }


async def test_access_token_added_by_the_authenticator_is_moved_too(make_spawner):
    """The authenticator's pre_spawn_start puts the Keycloak access token in DESP_ACCESS_TOKEN."""
    spawner = make_spawner("aiuser", recorded=True)
    spawner.environment["DESP_ACCESS_TOKEN"] = "kc-access-token"
    raw, pod = await render(spawner, "ai")
    assert "DESP_ACCESS_TOKEN" in plain_secrets(raw)
    assert plain_secrets(pod) == [] and "kc-access-token" not in str(pod)
    secret = spawner.api.calls[0][2]
    assert secret.string_data["DESP_ACCESS_TOKEN"] == "kc-access-token"


@pytest.mark.parametrize(
    "recorded", [pytest.param(False, id="hub-groups-and-claims"), pytest.param(True, id="recorded-in-auth-state")]
)
async def test_entitlement_reads_groups_and_roles_where_the_hub_keeps_them(make_spawner, recorded):
    spawner = make_spawner("admin", recorded=recorded)
    assert [e["slug"] for e in await spawner.profile_list(spawner)] == ["standard", "power", "ai"]
    spawner = make_spawner("aiuser", recorded=recorded)
    assert [e["slug"] for e in await spawner.profile_list(spawner)] == ["standard", "ai"]


async def test_leftover_secret_is_deleted_and_created_again(make_spawner):
    spawner = make_spawner("researcher")
    spawner.api.fail = {"create_namespaced_secret": 409}
    await render(spawner, "standard")
    assert [call[0] for call in spawner.api.calls] == [
        "create_namespaced_secret",
        "delete_namespaced_secret",
        "create_namespaced_secret",
    ]
    assert spawner.api.calls[1][1:] == ("jupyter-researcher-env", NAMESPACE)


async def test_secret_creation_failure_fails_the_spawn(make_spawner):
    spawner = make_spawner("researcher")
    spawner.api.fail = {"create_namespaced_secret": 403}
    with pytest.raises(ApiException):
        await render(spawner, "standard")


async def test_pod_takes_ownership_of_its_secret(make_spawner):
    spawner = make_spawner("aiuser")
    pod = {"metadata": {"name": "jupyter-aiuser", "uid": "7d4c-uid"}}
    await spawner.after_pod_created_hook(spawner, pod)
    assert spawner.api.calls == [
        (
            "patch_namespaced_secret",
            "jupyter-aiuser-env",
            NAMESPACE,
            {"metadata": {"ownerReferences": [
                {"apiVersion": "v1", "kind": "Pod", "name": "jupyter-aiuser", "uid": "7d4c-uid"}
            ]}},
        )
    ]


@pytest.mark.parametrize(
    "status, warns", [pytest.param(404, False, id="no-secret"), pytest.param(403, True, id="rbac")]
)
async def test_ownership_failure_does_not_fail_the_spawn(make_spawner, caplog, status, warns):
    spawner = make_spawner("aiuser")
    spawner.api.fail = {"patch_namespaced_secret": status}
    await own_secret_env(spawner, {"metadata": {"name": "jupyter-aiuser", "uid": "u"}})
    assert ("Could not hand Secret jupyter-aiuser-env" in caplog.text) is warns


@pytest.mark.parametrize(
    "username, slug",
    [
        pytest.param("researcher", "ai", id="researcher-ai"),
        pytest.param("researcher", "power", id="researcher-power"),
        pytest.param("aiuser", "power", id="aiuser-power"),
        pytest.param("poweruser", "ai", id="poweruser-ai"),
    ],
)
async def test_kubespawner_refuses_a_profile_the_user_is_not_entitled_to(make_spawner, username, slug):
    spawner = make_spawner(username)
    spawner.user_options = {"profile": slug}
    with pytest.raises(ValueError, match=f"No such profile: {slug}"):
        await spawner.load_user_options()


async def test_user_entitled_to_nothing_cannot_spawn(make_spawner):
    spawner = make_spawner("outsider")
    spawner.user_options = {}
    with pytest.raises(NotEntitled, match="may not start any server profile"):
        await spawner.load_user_options()


async def test_spawn_form_offers_only_entitled_profiles(make_spawner):
    form = await make_spawner("poweruser").get_options_form()
    assert 'value="standard"' in form and 'value="power"' in form
    assert 'value="ai"' not in form


async def test_profile_source_may_be_async_and_is_asked_every_time(make_spawner, profiles):
    asked = []

    async def source():
        asked.append(1)
        return [p for p in profiles if p.slug != "power"]

    spawner = make_spawner("admin", source=source)
    entries = await spawner.profile_list(spawner)
    assert [e["slug"] for e in entries] == ["standard", "ai"]
    await spawner.profile_list(spawner)
    assert len(asked) == 2


def test_kubespawner_profile_entries(profiles):
    standard, _power, ai = profiles
    assert kubespawner_profile(standard) == {
        "display_name": "Standard",
        "slug": "standard",
        "description": standard.description,
        "default": True,
        "kubespawner_override": {
            "image": "ghcr.io/desp-hub/singleuser:0.1.0",
            "cpu_guarantee": 0.5,
            "cpu_limit": 2.0,
            "mem_guarantee": GiB,
            "mem_limit": 4 * GiB,
            "node_selector": {},
            "environment": {"DESP_PROFILE": "standard", "DESP_DCU_PER_HOUR": "1.0"},
        },
    }
    override = kubespawner_profile(ai)["kubespawner_override"]
    assert override["extra_resource_limits"] == override["extra_resource_guarantees"] == {"nvidia.com/gpu": "1"}
    assert override["node_selector"] == {"nvidia.com/gpu.product": "NVIDIA-RTX-A6000"}
    assert override["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert [e["slug"] for e in kubespawner_profile_list(profiles)] == ["standard", "power", "ai"]
    # Entries are fresh plain data: KubeSpawner merges dict overrides into its traits, never into the profile.
    override["node_selector"]["x"] = "y"
    assert "x" not in ai.node_selector


@pytest.mark.parametrize(
    "name, secret",
    [
        ("JUPYTERHUB_API_TOKEN", True),
        ("JPY_API_TOKEN", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("AWS_SESSION_TOKEN", True),
        ("DESP_CACHE_PASSWORD", True),
        ("STAC_API_KEY", True),
        ("JUPYTERHUB_OAUTH_ACCESS_SCOPES", False),
        ("JUPYTERHUB_SSL_KEYFILE", False),
        ("DESP_PROFILE", False),
        ("MEM_LIMIT", False),
    ],
)
def test_secret_env_names(name, secret):
    assert is_secret_env_name(name) is secret


def test_move_secret_env_is_pure_and_keeps_references():
    reference = V1EnvVar(
        name="S3_SECRET",
        value_from=V1EnvVarSource(secret_key_ref=V1SecretKeySelector(name="s3", key="secret")),
    )
    pod = V1Pod(
        metadata=V1ObjectMeta(name="jupyter-x"),
        spec=V1PodSpec(
            init_containers=[V1Container(name="init", env=[V1EnvVar(name="GIT_TOKEN", value="g")])],
            containers=[
                V1Container(
                    name="notebook",
                    env=[V1EnvVar(name="A_TOKEN", value="t"), V1EnvVar(name="EMPTY_TOKEN", value=""), reference,
                         V1EnvVar(name="USER", value="x")],
                )
            ],
        ),
    )
    moved_pod, data = move_secret_env(pod, "jupyter-x-env")
    assert data == {"GIT_TOKEN": "g", "A_TOKEN": "t"}
    assert pod.spec.containers[0].env[0].value == "t"  # input untouched
    env = moved_pod.spec.containers[0].env
    assert env[0].value is None and env[0].value_from.secret_key_ref.name == "jupyter-x-env"
    assert env[1].value == "" and env[2] == reference and env[3].value == "x"
    assert moved_pod.spec.init_containers[0].env[0].value_from.secret_key_ref.key == "GIT_TOKEN"


async def test_profile_edited_in_the_store_shows_in_the_next_manifest(make_spawner, tmp_path):
    from desp_hub.profile_store import ProfileStore

    store = ProfileStore(f"sqlite:///{tmp_path / 'profiles.sqlite'}")
    store.upgrade()
    store.seed_if_empty(SEED)
    spawner = make_spawner("researcher", source=store.profiles)
    _, before = await render(spawner, "standard")
    assert before["spec"]["containers"][0]["resources"]["limits"]["memory"] == 4 * 2**30

    stored = store.get("standard")
    edited = dict(stored.profile.to_dict(), mem_limit=6 * 2**30, image="ghcr.io/desp-hub/singleuser:0.2.0")
    store.update("standard", edited, expected_version=stored.version, actor="admin")

    _, after = await render(make_spawner("researcher", source=store.profiles), "standard")
    container = after["spec"]["containers"][0]
    assert container["resources"]["limits"]["memory"] == 6 * 2**30
    assert container["image"] == "ghcr.io/desp-hub/singleuser:0.2.0"
