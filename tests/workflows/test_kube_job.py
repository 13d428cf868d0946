"""The Kubernetes Job of a workflow run: rendered offline from the seeded profiles and validated against the
Kubernetes schema (kubernetes-validate, as the spawner's pods in tests/hub/test_kube_manifests.py).

The command the Job runs is also run here, for real: papermill in the venv's kernel, with the ConfigMap's files
written where the Job mounts them (the two mount points mapped to temporary folders), so the flags and the
parameters file are known to work, and the typed values arrive in the notebook as literals.
"""

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import kubernetes_validate
import nbformat
import pytest

from desp_hub.kube import kubespawner_profile
from desp_hub.profiles import load_profiles
from desp_hub.workflows.executors import RunSpec
from desp_hub.workflows.kube_job import (
    INPUT_DIR,
    OUTPUT_DIR,
    KubernetesJobExecutor,
    NotebookTooLarge,
    job_name,
    label_value,
)

HERE = Path(__file__).resolve().parent
SEED = HERE.parents[1] / "hub" / "desp_hub" / "profiles.yaml"
K8S_VERSION = "1.34"  # as tests/hub/test_kube_manifests.py


def parameterised_notebook():
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    parameters = nbformat.v4.new_code_cell("region = 'Europe'\nthreshold: float = 1.5\nyears = [2020]\n")
    parameters.metadata["tags"] = ["parameters"]
    nb.cells = [
        parameters,
        nbformat.v4.new_code_cell(
            "import json\n"
            "with open('seen.json', 'w') as f:\n"
            "    json.dump({'region': region, 'threshold': threshold, 'years': years,\n"
            "               'types': [type(region).__name__, type(threshold).__name__, type(years).__name__]}, f)\n"
        ),
    ]
    return nbformat.reads(nbformat.writes(nb), as_version=4)


@pytest.fixture(scope="module")
def profiles():
    return {p.slug: p for p in load_profiles(SEED)}


@pytest.fixture
def executor():
    return KubernetesJobExecutor(
        namespace="desp-workflows",
        extra_env={"DESP_CATALOGUE_URL": "https://hda.example/stac/v2", "DESP_TRACE_URL": "https://trace.example"},
        env_secret_name="desp-workflows-platform",
    )


def spec(profile, **changes):
    values = dict(
        run_id=31,
        attempt=2,
        run_dir=Path("/srv/workflows/runs/31"),  # the service's side; the Job writes to the runs volume
        workflow_id=7,
        user="researcher",
        profile=profile,
        notebook=parameterised_notebook(),
        parameters={"region": "Italy", "threshold": 2, "years": [2021, 2022]},
        timeout_seconds=900,
        retries=2,
    )
    values.update(changes)
    return RunSpec(**values)


@pytest.mark.parametrize("slug", ["standard", "power", "ai"])
def test_job_for_every_seeded_profile_validates_and_carries_the_profile(executor, profiles, slug):
    profile = profiles[slug]
    job = executor.job_manifest(spec(profile))
    kubernetes_validate.validate(job, desired_version=K8S_VERSION, strict=True)

    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["metadata"]["name"] == "workflow-run-31-2"
    assert job["spec"]["activeDeadlineSeconds"] == 900
    assert job["spec"]["backoffLimit"] == 0  # one Job per attempt: the runner counts the retries
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    [container] = pod["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}

    # Image and resources: exactly what the spawner gives a server of the same profile.
    override = kubespawner_profile(profile)["kubespawner_override"]
    assert container["image"] == override["image"]
    gpu = {"nvidia.com/gpu": str(profile.gpus)} if profile.gpus else {}
    assert container["resources"] == {
        "requests": {"cpu": override["cpu_guarantee"], "memory": override["mem_guarantee"], **gpu},
        "limits": {"cpu": override["cpu_limit"], "memory": override["mem_limit"], **gpu},
    }
    assert pod.get("nodeSelector", {}) == override["node_selector"]
    assert pod.get("tolerations", []) == override.get("tolerations", [])

    env = {var["name"]: var["value"] for var in container["env"]}
    assert env["DESP_PROFILE"] == slug and env["DESP_RUN_ID"] == "31" and env["JUPYTERHUB_USER"] == "researcher"
    assert env["DESP_CATALOGUE_URL"] == "https://hda.example/stac/v2"
    assert container["envFrom"] == [{"secretRef": {"name": "desp-workflows-platform"}}]

    # The notebook comes from the run's ConfigMap, the results go to the run's folder on the runs volume.
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["input"]["configMap"]["name"] == job["metadata"]["name"]
    assert volumes["run"]["persistentVolumeClaim"]["claimName"] == executor.runs_claim_name
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["input"]["readOnly"] is True and mounts["run"]["subPath"] == "31"


def test_config_map_validates_and_holds_the_notebook_and_typed_parameters(executor, profiles):
    run = spec(profiles["standard"])
    config_map = executor.config_map_manifest(run)
    kubernetes_validate.validate(config_map, desired_version=K8S_VERSION, strict=True)
    assert config_map["metadata"]["name"] == executor.job_manifest(run)["metadata"]["name"]
    assert nbformat.reads(config_map["data"]["input.ipynb"], as_version=4) == run.notebook
    assert json.loads(config_map["data"]["parameters.json"]) == {"region": "Italy", "threshold": 2, "years": [2021, 2022]}


def test_parameter_values_never_reach_the_command_line(executor, profiles):
    hostile = "x'); import os; os.system('id') #"
    run = spec(profiles["standard"], parameters={"region": hostile})
    job = executor.job_manifest(run)
    assert hostile not in json.dumps(job)
    assert json.loads(executor.config_map_manifest(run)["data"]["parameters.json"]) == {"region": hostile}


def test_whole_manifest_for_the_ai_profile(profiles):
    """The whole Job, compared as data (KubeSpawner's habit): nothing unexpected slips in."""
    executor = KubernetesJobExecutor(ttl_seconds_after_finished=3600)
    job = executor.job_manifest(spec(profiles["ai"], retries=0, timeout_seconds=60, kernel_name="desp-ai"))
    labels = {
        "app.kubernetes.io/name": "desp-workflows",
        "app.kubernetes.io/component": "workflow-run",
        "app.kubernetes.io/managed-by": "desp-hub",
        "desp.destine.eu/run-id": "31",
        "desp.destine.eu/attempt": "2",
        "desp.destine.eu/workflow-id": "7",
        "desp.destine.eu/user": "researcher",
    }
    assert job == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "workflow-run-31-2",
            "namespace": "desp-workflows",
            "labels": labels,
            "annotations": {"desp.destine.eu/profile": "ai", "desp.destine.eu/user": "researcher"},
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 60,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 1000,
                        "runAsGroup": 100,
                        "fsGroup": 100,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "papermill",
                            "image": "ghcr.io/desp-hub/singleuser-ai:0.1.0",
                            "command": [
                                "python", "-m", "papermill",
                                f"{INPUT_DIR}/input.ipynb", f"{OUTPUT_DIR}/output.ipynb",
                                "--parameters_file", f"{INPUT_DIR}/parameters.json",
                                "--kernel", "desp-ai",
                                "--cwd", OUTPUT_DIR,
                                "--log-output", "--no-progress-bar",
                            ],
                            "workingDir": OUTPUT_DIR,
                            "env": [
                                {"name": "DESP_DCU_PER_HOUR", "value": "10.0"},
                                {"name": "DESP_PROFILE", "value": "ai"},
                                {"name": "DESP_RUN_ID", "value": "31"},
                                {"name": "HOME", "value": "/tmp"},
                                {"name": "JUPYTERHUB_USER", "value": "researcher"},
                            ],
                            "resources": {
                                "requests": {"cpu": 4.0, "memory": 24 * 2**30, "nvidia.com/gpu": "1"},
                                "limits": {"cpu": 8.0, "memory": 48 * 2**30, "nvidia.com/gpu": "1"},
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "runAsNonRoot": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [
                                {"name": "input", "mountPath": INPUT_DIR, "readOnly": True},
                                {"name": "run", "mountPath": OUTPUT_DIR, "subPath": "31"},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "input", "configMap": {"name": "workflow-run-31-2"}},
                        {"name": "run", "persistentVolumeClaim": {"claimName": "desp-workflows-runs"}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-RTX-A6000"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                },
            },
        },
    }
    kubernetes_validate.validate(job, desired_version=K8S_VERSION, strict=True)


def test_no_timeout_means_no_deadline(executor, profiles):
    job = executor.job_manifest(spec(profiles["standard"], timeout_seconds=0))
    assert "activeDeadlineSeconds" not in job["spec"]
    kubernetes_validate.validate(job, desired_version=K8S_VERSION, strict=True)


@pytest.mark.parametrize(
    "run_id, user",
    [
        pytest.param(12, "researcher", id="integer-id"),
        pytest.param("0b7e5c84-2d1a-4f0e-9a55-6f1c2e3d4b5a", "Jane.Doe@example.org", id="uuid-and-email"),
        pytest.param("Run_With Spaces/and/slashes" * 4, "a" * 80, id="long-and-odd"),
    ],
)
def test_names_and_labels_are_valid_for_any_run_id_and_user(executor, profiles, run_id, user):
    run = spec(profiles["standard"], run_id=run_id, user=user)
    job = executor.job_manifest(run)
    kubernetes_validate.validate(job, desired_version=K8S_VERSION, strict=True)
    kubernetes_validate.validate(executor.config_map_manifest(run), desired_version=K8S_VERSION, strict=True)
    assert len(job["metadata"]["name"]) <= 63
    assert job["metadata"]["annotations"]["desp.destine.eu/user"] == user  # the exact name stays readable


def test_different_ids_attempts_and_users_never_share_a_name_or_label():
    assert job_name("a b") != job_name("a-b")
    assert job_name(7, 1) != job_name(7, 2)
    assert label_value("jane@x.org") != label_value("jane-x.org")
    assert label_value("researcher") == "researcher"


def test_a_notebook_too_large_for_a_config_map_is_refused(executor, profiles):
    notebook = parameterised_notebook()
    notebook.cells.append(nbformat.v4.new_markdown_cell("x" * 1_100_000))
    with pytest.raises(NotebookTooLarge, match="clear the notebook's outputs"):
        executor.config_map_manifest(spec(profiles["standard"], notebook=notebook))


def test_the_jobs_command_runs_the_notebook_with_the_typed_values(executor, profiles, tmp_path):
    """Run the Job's command with papermill from this venv, the mounts mapped to folders: a real execution."""
    run = spec(profiles["standard"], parameters={"region": "x'); import os #", "threshold": 2, "years": [1, 2]})
    config_map = executor.config_map_manifest(run)
    input_dir, run_dir = tmp_path / "input", tmp_path / "run"
    input_dir.mkdir()
    run_dir.mkdir()
    for name, text in config_map["data"].items():
        (input_dir / name).write_text(text)
    container = executor.job_manifest(run)["spec"]["template"]["spec"]["containers"][0]
    command = [
        part.replace(INPUT_DIR, str(input_dir)).replace(OUTPUT_DIR, str(run_dir)) for part in container["command"]
    ]
    assert command[:3] == ["python", "-m", "papermill"]
    result = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]

    seen = json.loads((run_dir / "seen.json").read_text())
    assert seen == {
        "region": "x'); import os #",
        "threshold": 2,
        "years": [1, 2],
        "types": ["str", "int", "list"],
    }
    executed = nbformat.read(run_dir / "output.ipynb", as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1


class RecordingKubernetes:
    """Stands in for the Kubernetes API (CoreV1Api and BatchV1Api): records calls, answers a settable Job status."""

    def __init__(self):
        self.calls = []
        self.status = SimpleNamespace(succeeded=None, failed=None, conditions=None)

    async def create_namespaced_config_map(self, namespace, body):
        self.calls.append(("create_config_map", namespace, body))

    async def create_namespaced_job(self, namespace, body):
        self.calls.append(("create_job", namespace, body))
        return SimpleNamespace(metadata=SimpleNamespace(uid="job-uid-1"))

    async def patch_namespaced_config_map(self, name, namespace, body):
        self.calls.append(("patch_config_map", name, namespace, body))

    async def read_namespaced_job_status(self, name, namespace):
        self.calls.append(("read_job_status", name, namespace))
        return SimpleNamespace(status=self.status)

    async def delete_namespaced_job(self, name, namespace, propagation_policy=None):
        self.calls.append(("delete_job", name, namespace, propagation_policy))


@pytest.fixture
def kube(executor):
    fake = RecordingKubernetes()
    executor._apis = (fake, fake)
    executor.status_interval_seconds = 0.05
    return fake


def test_start_creates_the_config_map_then_the_job_which_owns_it(executor, kube, profiles):
    run = spec(profiles["standard"])
    handle = executor.start(run)
    assert [call[0] for call in kube.calls] == ["create_config_map", "create_job", "patch_config_map"]
    assert kube.calls[0][1:] == ("desp-workflows", executor.config_map_manifest(run))
    assert kube.calls[1][1:] == ("desp-workflows", executor.job_manifest(run))
    assert kube.calls[2][1:] == ("workflow-run-31-2", "desp-workflows", {"metadata": {"ownerReferences": [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "workflow-run-31-2", "uid": "job-uid-1"}]}})  # fmt: skip
    assert handle.name == "workflow-run-31-2" and executor.poll(handle) is None


@pytest.mark.parametrize(
    "status, code",
    [
        pytest.param(dict(succeeded=1), 0, id="succeeded"),
        pytest.param(dict(failed=1), 1, id="failed"),
        pytest.param(dict(conditions=[SimpleNamespace(type="Failed", status="True", reason="DeadlineExceeded")]), 1,
                     id="deadline"),  # fmt: skip
    ],
)
def test_wait_reports_how_the_job_ended(executor, kube, profiles, status, code):
    handle = executor.start(spec(profiles["standard"]))
    assert executor.wait(handle, timeout=0.2) is None  # still running
    for name, value in status.items():
        setattr(kube.status, name, value)
    assert executor.wait(handle, timeout=10) == code
    assert executor.poll(handle) == code


def test_poll_answers_at_once_and_asks_in_the_background(executor, kube, profiles):
    handle = executor.start(spec(profiles["standard"]))
    kube.status.succeeded = 1
    deadline = time.monotonic() + 10
    while executor.poll(handle) is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert executor.poll(handle) == 0
    reads = [call for call in kube.calls if call[0] == "read_job_status"]
    assert reads and reads[0][1:] == ("workflow-run-31-2", "desp-workflows")


def test_kill_deletes_the_job_and_its_pod(executor, kube, profiles):
    handle = executor.start(spec(profiles["standard"]))
    executor.kill(handle)
    assert kube.calls[-1] == ("delete_job", "workflow-run-31-2", "desp-workflows", "Background")
    assert executor.poll(handle) == -15


def test_a_run_spec_without_the_profile_definition_is_refused(executor):
    with pytest.raises(TypeError, match="profile store"):
        executor.job_manifest(RunSpec(run_id=1, workflow_id=1, user="u", notebook=parameterised_notebook(),
                                      parameters={}, run_dir=Path("/tmp/x")))  # fmt: skip
