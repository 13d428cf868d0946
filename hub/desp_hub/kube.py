"""Profiles on Kubernetes: KubeSpawner `profile_list` entries, and keeping secrets out of pod specs.

`kubespawner_profile` is the one pure function turning a `Profile` into a KubeSpawner `profile_list` entry;
`entitled_profile_list` builds the callable for `c.KubeSpawner.profile_list` that offers each user only the
profiles they are entitled to, read from a profile source (the YAML seed today, the database store later).

KubeSpawner 7.1 writes every variable of `Spawner.get_env()` as a plain `value` into the pod spec, including
JUPYTERHUB_API_TOKEN (and its alias JPY_API_TOKEN): anyone who may read pods may read users' tokens
(jupyterhub/kubespawner#398). `move_secret_env` rewrites such variables into `valueFrom.secretKeyRef` of a
per-server Secret; the two hooks below create that Secret just before the pod and then hand its ownership to the
pod, so Kubernetes deletes it with the pod. Enable them with::

    c.KubeSpawner.modify_pod_hook = desp_hub.kube.store_secret_env
    c.KubeSpawner.after_pod_created_hook = desp_hub.kube.own_secret_env
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from kubernetes_asyncio.client import (
    V1EnvVar,
    V1EnvVarSource,
    V1ObjectMeta,
    V1Pod,
    V1Secret,
    V1SecretKeySelector,
)
from kubernetes_asyncio.client.exceptions import ApiException

from .profiles import NOTHING_ENTITLED, NotEntitled, Profile, entitled_profiles, groups_and_roles, profile_environment

__all__ = [
    "GPU_RESOURCE",
    "SECRET_ENV_PATTERN",
    "entitled_profile_list",
    "env_secret_manifest",
    "env_secret_name",
    "is_secret_env_name",
    "kubespawner_profile",
    "kubespawner_profile_list",
    "move_secret_env",
    "own_secret_env",
    "store_secret_env",
]

GPU_RESOURCE = "nvidia.com/gpu"

# Variable names that carry credentials: JupyterHub's own token, and what other config may add (S3 keys, ...).
SECRET_ENV_PATTERN = re.compile(
    r"(?:^|_)(?:TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?|API_KEY|ACCESS_KEY|PRIVATE_KEY|SECRET_KEY)$"
)

ProfileSource = Callable[[], "Iterable[Profile] | Awaitable[Iterable[Profile]]"]


def kubespawner_profile(profile: Profile) -> dict[str, Any]:
    """A KubeSpawner `profile_list` entry for the profile.

    Sizes go in as bytes and cores, which KubeSpawner renders as-is into the container's resources. Dict-valued
    overrides (`node_selector`, `environment`, `extra_resource_*`) are merged by KubeSpawner into the configured
    values; `tolerations` is a list and replaces the configured ones, so it is only set when the profile has any.
    """
    override: dict[str, Any] = {
        "image": profile.image,
        "cpu_guarantee": profile.cpu_guarantee,
        "cpu_limit": profile.cpu_limit,
        "mem_guarantee": profile.mem_guarantee,
        "mem_limit": profile.mem_limit,
        "node_selector": dict(profile.node_selector),
        "environment": profile_environment(profile),
    }
    if profile.gpus:
        # Extended resources are whole numbers and requests must equal limits; both are set so it reads plainly.
        override["extra_resource_limits"] = {GPU_RESOURCE: str(profile.gpus)}
        override["extra_resource_guarantees"] = {GPU_RESOURCE: str(profile.gpus)}
    if profile.tolerations:
        override["tolerations"] = [dict(t) for t in profile.tolerations]
    return {
        "display_name": profile.display_name,
        "slug": profile.slug,
        "description": profile.description,
        "default": profile.default,
        "kubespawner_override": override,
    }


def kubespawner_profile_list(profiles: Iterable[Profile]) -> list[dict[str, Any]]:
    """KubeSpawner `profile_list` entries for the profiles, in the order given."""
    return [kubespawner_profile(p) for p in profiles]


def entitled_profile_list(source: ProfileSource) -> Callable[[Any], Awaitable[list[dict[str, Any]]]]:
    """A callable for `c.KubeSpawner.profile_list`: the entries the spawner's user is entitled to.

    `source()` returns the current profiles (may be async); it is asked at every form render and every spawn,
    so edits apply without a restart. Groups and realm roles come from the user's auth_state and JupyterHub
    groups (`desp_hub.profiles.groups_and_roles`). KubeSpawner refuses a slug missing from the returned list,
    which is the server-side entitlement check. A user entitled to nothing gets `NotEntitled` rather than an
    empty list, because KubeSpawner would start a server with its bare defaults for an empty list.
    """

    async def profile_list(spawner: Any) -> list[dict[str, Any]]:
        profiles = source()
        if inspect.isawaitable(profiles):
            profiles = await profiles
        user = spawner.user
        groups, roles = groups_and_roles(await user.get_auth_state(), (group.name for group in user.groups))
        entitled = entitled_profiles(profiles, groups, roles)
        if not entitled:
            raise NotEntitled(NOTHING_ENTITLED)
        return kubespawner_profile_list(entitled)

    return profile_list


def is_secret_env_name(name: str) -> bool:
    """Whether an environment variable's name says it carries a credential (JUPYTERHUB_API_TOKEN, *_PASSWORD...)."""
    return bool(SECRET_ENV_PATTERN.search(name.upper()))


def env_secret_name(pod_name: str) -> str:
    """Name of the Secret holding a server's secret environment variables."""
    return f"{pod_name}-env"


def move_secret_env(pod: V1Pod, secret_name: str) -> tuple[V1Pod, dict[str, str]]:
    """A copy of `pod` whose credential-carrying plain env values read from Secret `secret_name` instead.

    Returns the new pod and the moved values ({variable name: value}), which the Secret must hold under the
    same keys. Variables already using `valueFrom`, and empty values, are left alone.
    """
    pod = copy.deepcopy(pod)
    moved: dict[str, str] = {}
    for container in [*(pod.spec.init_containers or []), *(pod.spec.containers or [])]:
        env = []
        for var in container.env or []:
            if var.value_from is None and var.value and is_secret_env_name(var.name):
                moved[var.name] = var.value
                var = V1EnvVar(
                    name=var.name,
                    value_from=V1EnvVarSource(secret_key_ref=V1SecretKeySelector(name=secret_name, key=var.name)),
                )
            env.append(var)
        container.env = env
    return pod, moved


def env_secret_manifest(
    name: str,
    data: dict[str, str],
    labels: dict[str, str] | None = None,
    owner_references: list[dict[str, Any]] | None = None,
) -> V1Secret:
    """The Secret holding a server's secret environment variables (`string_data`: the API server encodes it)."""
    return V1Secret(
        api_version="v1",
        kind="Secret",
        type="Opaque",
        metadata=V1ObjectMeta(name=name, labels=dict(labels or {}), owner_references=owner_references),
        string_data=dict(data),
    )


async def store_secret_env(spawner: Any, pod: V1Pod) -> V1Pod:
    """`KubeSpawner.modify_pod_hook`: move secret env into a Secret, create it, return the rewritten pod.

    Runs just before KubeSpawner creates the pod, so the Secret exists when the kubelet starts the container.
    """
    secret_name = env_secret_name(pod.metadata.name)
    pod, data = move_secret_env(pod, secret_name)
    if not data:
        return pod
    secret = env_secret_manifest(secret_name, data, labels=pod.metadata.labels)
    api, namespace, timeout = spawner.api, spawner.namespace, spawner.k8s_api_request_timeout
    try:
        await asyncio.wait_for(api.create_namespaced_secret(namespace, secret), timeout)
    except ApiException as error:
        if error.status != 409:
            raise
        # Left over from an earlier server of the same name (its token is revoked). Delete and create rather than
        # replace: the hub's stock RBAC (z2jh) allows create and delete on secrets, not update.
        await asyncio.wait_for(api.delete_namespaced_secret(secret_name, namespace), timeout)
        await asyncio.wait_for(api.create_namespaced_secret(namespace, secret), timeout)
    return pod


async def own_secret_env(spawner: Any, pod: dict[str, Any]) -> None:
    """`KubeSpawner.after_pod_created_hook`: make the pod own its env Secret, so deleting the pod deletes it.

    Needs `patch` on secrets in the hub's Role (z2jh's stock Role has get/list/watch/create/delete). A failure
    is logged, not raised: the server works without it, and an orphaned Secret only holds a token JupyterHub
    revoked when the server stopped.
    """
    metadata = pod["metadata"]
    secret_name = env_secret_name(metadata["name"])
    owner = {"apiVersion": "v1", "kind": "Pod", "name": metadata["name"], "uid": metadata["uid"]}
    try:
        await asyncio.wait_for(
            spawner.api.patch_namespaced_secret(
                secret_name, spawner.namespace, {"metadata": {"ownerReferences": [owner]}}
            ),
            spawner.k8s_api_request_timeout,
        )
    except ApiException as error:
        if error.status == 404:
            return  # the pod had nothing secret to move
        spawner.log.warning("Could not hand Secret %s to pod %s: %s", secret_name, metadata["name"], error.reason)
    except asyncio.TimeoutError:
        spawner.log.warning("Timed out handing Secret %s to pod %s", secret_name, metadata["name"])
