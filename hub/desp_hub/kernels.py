"""DESP's Jupyter kernel specs (`kernels/` in the source tree) for the users' servers of `desp-hub up`.

- `desp-python`: "Python 3 (DESP)", the server's Python with the DESP SDK (`desp_lab`), which reads the platform's
  endpoints from the environment the hub gives every server (DespPlatformEndpoints: DESP_CATALOGUE_URL, ...).
- `desp-python-dask`: the same, with `gateway` (a `dask_gateway.Gateway()` of the platform's Dask Gateway, found
  from DASK_GATEWAY__* in the server's environment) defined at start.

In an image or a wheel install the specs are already in `{sys.prefix}/share/jupyter/kernels` (shared data). From
a source checkout, `install_kernel_specs` copies them under the hub's data directory at start-up and names that
directory in the servers' JUPYTER_PATH, so the venv is never written to.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: The kernel specs in the source tree (absent from an installed wheel, which carries them as shared data).
KERNELS_SOURCE = Path(__file__).resolve().parents[2] / "kernels"


def kernel_spec_dirs(source: Path = KERNELS_SOURCE) -> list[Path]:
    """The kernel spec directories (each with a kernel.json) under `source`, by name."""
    return sorted(path.parent for path in source.glob("*/kernel.json")) if source.is_dir() else []


def install_kernel_specs(c: Any, data_dir: str | None = None, source: Path = KERNELS_SOURCE) -> list[str]:
    """Install the kernel specs under `{data_dir}/share/jupyter/kernels` (default: the hub's working directory) and
    add that data directory to the servers' JUPYTER_PATH (c.Spawner.environment). Returns the names installed
    (none when there is no source tree: an installed wheel already has them)."""
    from jupyter_client.kernelspec import KernelSpecManager

    specs = kernel_spec_dirs(source)
    if not specs:
        return []
    prefix = os.path.abspath(data_dir or os.getcwd())
    manager = KernelSpecManager()
    for spec in specs:
        manager.install_kernel_spec(str(spec), spec.name, prefix=prefix)
    c.Spawner.environment.update({"JUPYTER_PATH": os.path.join(prefix, "share", "jupyter")})
    return [spec.name for spec in specs]
