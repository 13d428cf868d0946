"""Workflow runs on Kubernetes: one batch/v1 Job per run, the notebook and its parameters in a ConfigMap.

The cluster counterpart of the local process executor. What a run becomes is decided by two pure builders,
`KubernetesJobExecutor.job_manifest` and `.config_map_manifest` (plain dicts, validated against the Kubernetes
schema in tests like the spawner's pods); the API calls that create, watch and delete them are separate and small.

The Job runs papermill inside the profile's image with the profile's CPU, memory, GPUs, node selector and
tolerations (the same `Profile` the spawner turns into KubeSpawner overrides), as a non-root user with no
privilege escalation:

* the notebook (`input.ipynb`) and the typed parameters (`parameters.json`, which papermill reads with `-f` and
  writes into the notebook as literals; never formatted into code) come from a per-run ConfigMap mounted read-only;
* the executed notebook and the declared outputs go to `<runs claim>/<run id>/` on a PersistentVolumeClaim the
  service mounts as well (its `data dir/runs`), so results land where the local executor puts them;
* one Job is one *attempt* of the run (the `Executor` protocol of `desp_hub.workflows.executors`): the runner
  counts attempts and retries, so the Job's `backoffLimit` is 0 (a Kubernetes retry inside an attempt would multiply
  the workflow's retries), its `activeDeadlineSeconds` is the workflow's timeout (Kubernetes stops an attempt the
  runner lost track of), and its name carries the run id and the attempt number.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

from traitlets import Dict, Float, Integer, List, Unicode
from traitlets.config import LoggingConfigurable

from desp_hub.kube import GPU_RESOURCE
from desp_hub.profiles import Profile, profile_environment

__all__ = [
    "INPUT_DIR",
    "JobHandle",
    "KubernetesJobExecutor",
    "MAX_CONFIG_MAP_BYTES",
    "NotebookTooLarge",
    "OUTPUT_DIR",
    "job_name",
    "label_value",
]

#: Where the ConfigMap (notebook + parameters) is mounted in the run's container.
INPUT_DIR = "/workflow/input"
#: Where the run's folder on the runs volume is mounted (papermill's cwd: outputs are written here).
OUTPUT_DIR = "/workflow/run"
#: Kubernetes refuses ConfigMaps above 1 MiB (etcd's object size); keep a margin for metadata.
MAX_CONFIG_MAP_BYTES = 1_000_000

_LABEL_VALUE = re.compile(r"[^A-Za-z0-9._-]+")


class NotebookTooLarge(ValueError):
    """The notebook and its parameters do not fit in a ConfigMap (about 1 MB)."""


def label_value(text: Any) -> str:
    """A valid label value for any text: at most 63 of [A-Za-z0-9._-], starting and ending alphanumeric.

    A value that had to change gets a short hash suffix, so two different user names never share a label.
    """
    text = str(text)
    cleaned = _LABEL_VALUE.sub("-", text).strip("-._")
    if cleaned == text and len(cleaned) <= 63:
        return cleaned
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{cleaned[:54].rstrip('-._')}-{digest}".lstrip("-")


def job_name(run_id: Any, attempt: int = 1) -> str:
    """The Job's (and ConfigMap's) name for an attempt of a run: a DNS-1123 label, unique per run id and attempt."""
    slug = re.sub(r"[^a-z0-9-]+", "-", str(run_id).lower()).strip("-")
    name = f"workflow-run-{slug}-{int(attempt)}"
    if len(name) > 63 or slug != str(run_id).lower():
        digest = hashlib.sha256(str(run_id).encode()).hexdigest()[:10]
        name = f"workflow-run-{slug[:30].strip('-')}-{digest}-{int(attempt)}"
    return name.replace("--", "-")


def _name(run_spec: Any) -> str:
    return job_name(_spec_value(run_spec, "run_id"), int(_spec_value(run_spec, "attempt") or 1))


def _spec_value(run_spec: Any, name: str, default: Any = None) -> Any:
    """`run_spec.name` or `run_spec[name]`: the run spec may be the runner's dataclass or a plain mapping."""
    if isinstance(run_spec, Mapping):
        return run_spec.get(name, default)
    return getattr(run_spec, name, default)


@dataclasses.dataclass
class JobHandle:
    """An attempt running as a Job: its name, and its exit code once Kubernetes reports the Job finished."""

    name: str
    namespace: str
    exit_code: int | None = None
    checked: float = 0.0  # time.monotonic() of the last status request
    pending: Any = None  # the status request in flight (a concurrent.futures.Future)


def exit_code_of(job: Any) -> int | None:
    """0 when the Job succeeded, 1 when it failed (including its deadline), None while it runs."""
    status = getattr(job, "status", None)
    if status is None:
        return None
    if (status.succeeded or 0) >= 1:
        return 0
    conditions = status.conditions or []
    if (status.failed or 0) >= 1 or any(c.type == "Failed" and c.status == "True" for c in conditions):
        return 1
    return None


class KubernetesJobExecutor(LoggingConfigurable):
    """Runs each attempt of a workflow run as a Kubernetes Job (papermill in the profile's image).

    An `Executor` of `desp_hub.workflows.executors` (set `c.WorkflowRunner.executor_class` to this class): `start`
    creates the ConfigMap and the Job (the ConfigMap then belongs to the Job, so Kubernetes deletes it with it),
    `poll` answers at once from the last known status and asks for a fresh one in the background every
    `status_interval_seconds`, `kill` deletes the Job and its pod. The Kubernetes API is called from a private event
    loop in a thread (kubernetes_asyncio), configured in the cluster from the pod's service account, else from
    the kubeconfig.
    """

    namespace = Unicode(
        "desp-workflows",
        help="Namespace of the runs' Jobs and ConfigMaps (the service account needs create/get/list/delete on "
        "jobs, configmaps and pods there).",
    ).tag(config=True)

    runs_claim_name = Unicode(
        "desp-workflows-runs",
        help="PersistentVolumeClaim holding the runs' folders (ReadWriteMany, also mounted by the workflows service "
        "as its `runs/` data folder); each run writes only below `<run id>/` (a subPath).",
    ).tag(config=True)

    kernel_name = Unicode(
        "python3",
        help="Kernel papermill starts in the profile's image when the run spec names none (the images install "
        "their environment as `python3`).",
    ).tag(config=True)

    service_account_name = Unicode(
        "",
        help="Service account the run pods use (empty: the namespace's `default`). Runs need no Kubernetes API "
        "access, so its token is not mounted either way.",
    ).tag(config=True)

    env_secret_name = Unicode(
        "",
        help="Secret whose keys become environment variables of every run (platform credentials such as S3 keys); "
        "empty: none. Secrets never go into the Job's plain env.",
    ).tag(config=True)

    extra_env = Dict(
        value_trait=Unicode(),
        help="Plain environment variables of every run (the DESP endpoints: DESP_CATALOGUE_URL, DESP_CACHE_URL, "
        "DESP_TRACE_URL, ...). Variables the run spec carries are added on top.",
    ).tag(config=True)

    run_as_user = Integer(1000, help="UID the run's container runs as (never 0).").tag(config=True)

    run_as_group = Integer(100, help="GID of the run's container and group owner of the runs volume (fsGroup).").tag(
        config=True
    )

    ttl_seconds_after_finished = Integer(
        86400,
        help="Seconds Kubernetes keeps a finished Job (and its pod's log) before deleting it; the results are on the "
        "runs volume already. 0 keeps nothing.",
    ).tag(config=True)

    status_interval_seconds = Float(
        2.0, help="Seconds between two status requests for a running Job (poll answers from the last one)."
    ).tag(config=True)

    api_timeout_seconds = Float(30.0, help="Timeout of one Kubernetes API request, in seconds.").tag(config=True)

    image_pull_secrets = List(
        Unicode(), help="Names of image pull secrets for the profiles' images (private registries)."
    ).tag(config=True)

    # ------------------------------------------------------------------------------------------- builders

    def labels(self, run_spec: Any) -> dict[str, str]:
        """Labels of the Job, its pod and its ConfigMap: what a person or the service selects runs by."""
        labels = {
            "app.kubernetes.io/name": "desp-workflows",
            "app.kubernetes.io/component": "workflow-run",
            "app.kubernetes.io/managed-by": "desp-hub",
            "desp.destine.eu/run-id": label_value(_spec_value(run_spec, "run_id")),
            "desp.destine.eu/attempt": str(int(_spec_value(run_spec, "attempt") or 1)),
        }
        if (workflow_id := _spec_value(run_spec, "workflow_id")) is not None:
            labels["desp.destine.eu/workflow-id"] = label_value(workflow_id)
        if user := _spec_value(run_spec, "user"):
            labels["desp.destine.eu/user"] = label_value(user)
        return labels

    def parameters_json(self, run_spec: Any) -> str:
        """The run's typed parameters as the JSON papermill reads with `-f` (JSON is YAML)."""
        return json.dumps(dict(_spec_value(run_spec, "parameters") or {}), sort_keys=True)

    def config_map_manifest(self, run_spec: Any) -> dict[str, Any]:
        """The ConfigMap holding `input.ipynb` (the version's notebook) and `parameters.json` for the run.

        Raises NotebookTooLarge above MAX_CONFIG_MAP_BYTES (a notebook with large embedded outputs: publish it
        with its outputs cleared).
        """
        notebook = _spec_value(run_spec, "notebook")
        notebook_text = notebook if isinstance(notebook, str) else json.dumps(notebook)
        data = {"input.ipynb": notebook_text, "parameters.json": self.parameters_json(run_spec)}
        size = sum(len(value.encode()) for value in data.values())
        if size > MAX_CONFIG_MAP_BYTES:
            raise NotebookTooLarge(
                f"the notebook and its parameters take {size} bytes; a Kubernetes run takes at most "
                f"{MAX_CONFIG_MAP_BYTES} (clear the notebook's outputs before publishing)"
            )
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": _name(run_spec),
                "namespace": self.namespace,
                "labels": self.labels(run_spec),
            },
            "data": data,
        }

    def env(self, run_spec: Any, profile: Profile) -> list[dict[str, Any]]:
        """The container's plain environment: DESP endpoints, the profile's variables, the run's identity."""
        values: dict[str, str] = dict(self.extra_env)
        values.update({str(k): str(v) for k, v in dict(_spec_value(run_spec, "env") or {}).items()})
        values.update(profile_environment(profile))
        values.update(
            {
                "DESP_RUN_ID": str(_spec_value(run_spec, "run_id")),
                # papermill and the kernel write runtime files under HOME; the root filesystem is read-only.
                "HOME": "/tmp",
            }
        )
        if user := _spec_value(run_spec, "user"):
            values["JUPYTERHUB_USER"] = str(user)
        return [{"name": name, "value": value} for name, value in sorted(values.items())]

    def resources(self, profile: Profile) -> dict[str, dict[str, Any]]:
        """Requests and limits from the profile (cores and bytes, as KubeSpawner renders them)."""
        requests: dict[str, Any] = {"cpu": profile.cpu_guarantee, "memory": profile.mem_guarantee}
        limits: dict[str, Any] = {"cpu": profile.cpu_limit, "memory": profile.mem_limit}
        if profile.gpus:
            requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(profile.gpus)
        return {"requests": requests, "limits": limits}

    def papermill_command(self, run_spec: Any) -> list[str]:
        """papermill reading the mounted notebook and parameters file, writing the executed notebook to the run
        folder, in the profile's kernel, with the run folder as the notebook's working directory."""
        kernel = _spec_value(run_spec, "kernel_name") or _spec_value(run_spec, "kernel") or self.kernel_name
        return [
            "python",
            "-m",
            "papermill",
            f"{INPUT_DIR}/input.ipynb",
            f"{OUTPUT_DIR}/output.ipynb",
            "--parameters_file",
            f"{INPUT_DIR}/parameters.json",
            "--kernel",
            str(kernel),
            "--cwd",
            OUTPUT_DIR,
            "--log-output",
            "--no-progress-bar",
        ]

    def job_manifest(self, run_spec: Any) -> dict[str, Any]:
        """The batch/v1 Job for an attempt of the run (a pure function of the run spec and this executor's settings).

        The run spec (`desp_hub.workflows.executors.RunSpec`, or a mapping with the same keys) carries `run_id`,
        `attempt`, `workflow_id`, `user`, `profile` (a `Profile`: the runner's profile store must be configured),
        `parameters`, `timeout_seconds`, optionally `kernel_name` and `env`.
        """
        run_id = _spec_value(run_spec, "run_id")
        profile = _spec_value(run_spec, "profile")
        if not isinstance(profile, Profile):
            raise TypeError(
                f"run {run_id}: the Kubernetes executor needs the profile's definition (image, resources); "
                f"got {type(profile).__name__} (is the runner's profile store configured?)"
            )
        timeout = int(_spec_value(run_spec, "timeout_seconds") or 0)
        name = _name(run_spec)
        labels = self.labels(run_spec)

        container: dict[str, Any] = {
            "name": "papermill",
            "image": profile.image,
            "command": self.papermill_command(run_spec),
            "workingDir": OUTPUT_DIR,
            "env": self.env(run_spec, profile),
            "resources": self.resources(profile),
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "runAsNonRoot": True,
                "capabilities": {"drop": ["ALL"]},
            },
            "volumeMounts": [
                {"name": "input", "mountPath": INPUT_DIR, "readOnly": True},
                {"name": "run", "mountPath": OUTPUT_DIR, "subPath": str(run_id)},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
        }
        if self.env_secret_name:
            container["envFrom"] = [{"secretRef": {"name": self.env_secret_name}}]

        pod_spec: dict[str, Any] = {
            "restartPolicy": "Never",  # a failed attempt is a new pod, counted against backoffLimit
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": self.run_as_user,
                "runAsGroup": self.run_as_group,
                "fsGroup": self.run_as_group,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": [
                {"name": "input", "configMap": {"name": name}},
                {"name": "run", "persistentVolumeClaim": {"claimName": self.runs_claim_name}},
                {"name": "tmp", "emptyDir": {}},
            ],
        }
        if profile.node_selector:
            pod_spec["nodeSelector"] = dict(profile.node_selector)
        if profile.tolerations:
            pod_spec["tolerations"] = [dict(t) for t in profile.tolerations]
        if self.service_account_name:
            pod_spec["serviceAccountName"] = self.service_account_name
        if self.image_pull_secrets:
            pod_spec["imagePullSecrets"] = [{"name": secret} for secret in self.image_pull_secrets]

        job_spec: dict[str, Any] = {
            "backoffLimit": 0,  # one Job per attempt: the runner retries
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        }
        if timeout > 0:
            job_spec["activeDeadlineSeconds"] = timeout
        if self.ttl_seconds_after_finished > 0:
            job_spec["ttlSecondsAfterFinished"] = self.ttl_seconds_after_finished

        annotations = {"desp.destine.eu/profile": profile.slug}
        if user := _spec_value(run_spec, "user"):
            annotations["desp.destine.eu/user"] = str(user)
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels, "annotations": annotations},
            "spec": job_spec,
        }

    # ------------------------------------------------------------------------------------------- API calls

    _loop: asyncio.AbstractEventLoop | None = None
    _apis: tuple[Any, Any] | None = None  # (CoreV1Api, BatchV1Api); tests may set their own

    def _call(self, make_coroutine) -> Any:
        """Run `make_coroutine(core, batch)` on the private loop and wait for its result."""
        return self._submit(make_coroutine).result(self.api_timeout_seconds + 5)

    def _submit(self, make_coroutine):
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            threading.Thread(target=self._loop.run_forever, name="kube-jobs", daemon=True).start()

        async def call():
            core, batch = await self._clients()
            return await asyncio.wait_for(make_coroutine(core, batch), self.api_timeout_seconds)

        return asyncio.run_coroutine_threadsafe(call(), self._loop)

    async def _clients(self) -> tuple[Any, Any]:
        if self._apis is None:
            from kubernetes_asyncio import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                await config.load_kube_config()
            api = client.ApiClient()
            self._apis = (client.CoreV1Api(api), client.BatchV1Api(api))
        return self._apis

    def start(self, spec: Any) -> JobHandle:
        config_map, job = self.config_map_manifest(spec), self.job_manifest(spec)
        namespace, name = self.namespace, job["metadata"]["name"]

        async def create(core, batch):
            await core.create_namespaced_config_map(namespace, config_map)
            created = await batch.create_namespaced_job(namespace, job)
            owner = {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": created.metadata.uid}
            await core.patch_namespaced_config_map(name, namespace, {"metadata": {"ownerReferences": [owner]}})

        self._call(create)
        self.log.info("Run %s attempt %s started: Job %s/%s", spec.run_id, spec.attempt, namespace, name)
        return JobHandle(name, namespace, checked=time.monotonic())

    def _refresh(self, handle: JobHandle) -> None:
        """Ask for the Job's status in the background (one request at a time per handle)."""
        if handle.pending is not None and not handle.pending.done():
            return
        handle.checked = time.monotonic()
        handle.pending = self._submit(
            lambda core, batch: batch.read_namespaced_job_status(handle.name, handle.namespace)
        )

        def record(future):
            try:
                handle.exit_code = exit_code_of(future.result())
            except Exception as error:  # the next poll asks again
                self.log.warning("Job %s: status not read: %s", handle.name, error)

        handle.pending.add_done_callback(record)

    def poll(self, handle: JobHandle) -> int | None:
        if handle.exit_code is None and time.monotonic() - handle.checked >= self.status_interval_seconds:
            self._refresh(handle)
        return handle.exit_code

    def wait(self, handle: JobHandle, timeout: float | None = None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while handle.exit_code is None and (deadline is None or time.monotonic() < deadline):
            handle.checked = 0.0
            self.poll(handle)
            if handle.pending is not None:
                try:
                    handle.pending.result(self.api_timeout_seconds + 5)
                except Exception:
                    pass
            if handle.exit_code is None:
                left = self.status_interval_seconds if deadline is None else deadline - time.monotonic()
                time.sleep(max(0.0, min(self.status_interval_seconds, left)))
        return handle.exit_code

    def kill(self, handle: JobHandle) -> None:
        """Delete the Job and its pod (its ConfigMap goes with it); an attempt killed before its end failed."""

        async def delete(core, batch):
            try:
                await batch.delete_namespaced_job(handle.name, handle.namespace, propagation_policy="Background")
            except Exception as error:
                if getattr(error, "status", None) != 404:
                    raise

        self._call(delete)
        if handle.exit_code is None:
            handle.exit_code = -15
