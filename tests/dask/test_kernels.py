"""The DESP kernel specs: installed for the hub's servers, and the Dask variant starts with a ready `gateway`."""

import json
import os

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import start_new_kernel
from traitlets.config import Config

from desp_hub.kernels import KERNELS_SOURCE, install_kernel_specs, kernel_spec_dirs


def test_the_source_tree_has_both_kernel_specs():
    names = [spec.name for spec in kernel_spec_dirs()]
    assert names == ["desp-python", "desp-python-dask"]
    for name in names:
        spec = json.loads((KERNELS_SOURCE / name / "kernel.json").read_text())
        assert spec["argv"][:3] == ["python", "-m", "ipykernel_launcher"] and spec["env"]["DESP_KERNEL"] == name


def test_installed_under_the_data_directory_and_on_the_servers_jupyter_path(tmp_path):
    c = Config()
    assert install_kernel_specs(c, str(tmp_path)) == ["desp-python", "desp-python-dask"]
    data_dir = str(tmp_path / "share" / "jupyter")
    assert c.Spawner.environment.get_value({}) == {"JUPYTER_PATH": data_dir}
    specs = KernelSpecManager(kernel_dirs=[os.path.join(data_dir, "kernels")]).get_all_specs()
    assert specs["desp-python"]["spec"]["display_name"] == "Python 3 (DESP)"
    assert install_kernel_specs(Config(), str(tmp_path), source=tmp_path / "nowhere") == []  # wheel install


def run(client, code):
    """Run `code` in the kernel; its text/plain result."""
    outputs = []
    reply = client.execute_interactive(code, timeout=60, output_hook=outputs.append)
    assert reply["content"]["status"] == "ok", reply
    return next(m["content"]["data"]["text/plain"] for m in outputs if m["msg_type"] == "execute_result")


def test_the_dask_kernel_starts_with_a_gateway_from_the_environment(tmp_path, monkeypatch):
    install_kernel_specs(Config(), str(tmp_path))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share" / "jupyter"))
    monkeypatch.setenv("DASK_GATEWAY__ADDRESS", "http://127.0.0.1:9/services/dask-gateway")
    manager, client = start_new_kernel(kernel_name="desp-python-dask", startup_timeout=120)
    try:
        assert run(client, "(type(gateway).__name__, gateway.address, __import__('os').environ['DESP_KERNEL'])") == (
            "('Gateway', 'http://127.0.0.1:9/services/dask-gateway', 'desp-python-dask')"
        )
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
