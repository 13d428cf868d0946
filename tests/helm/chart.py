"""Rendering helm/desp-hub with the pinned helm (`make helm` builds it into .venv/bin), for the chart's tests.

The gap, named once here: the upstream charts (z2jh `jupyterhub`, `dask-gateway`) cannot be fetched on this machine
(their Helm repositories are unreachable, the Go module proxy refuses their source modules, and no reachable package
registry carries them), so `helm dependency build` cannot run. Unless they have been vendored into
helm/desp-hub/charts/, the chart is linted and rendered from a temporary copy whose Chart.yaml declares no
dependencies: our own templates, values and schema are checked, the subcharts' manifests are not.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "desp-hub"
EXAMPLES = CHART / "examples"
HELM = Path(sys.executable).parent / "helm"
RELEASE = "desp-hub"
NAMESPACE = "desp"


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    if not HELM.exists():
        raise AssertionError(f"{HELM} is missing: run `make helm` (go install helm.sh/helm/v3/cmd/helm)")
    result = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def dependencies_vendored() -> bool:
    """Whether every dependency's chart archive is in helm/desp-hub/charts/ (after `helm dependency build`)."""
    declared = yaml.safe_load((CHART / "Chart.yaml").read_text()).get("dependencies", [])
    charts = CHART / "charts"
    return all(any(charts.glob(f"{d['name']}-{d['version']}.tgz")) for d in declared) if charts.is_dir() else False


def renderable_chart(tmp_path: Path) -> Path:
    """The chart itself when its dependencies are vendored, else a copy without them (see the module's note)."""
    if dependencies_vendored():
        return CHART
    copy = tmp_path / "desp-hub"
    if copy.exists():
        return copy
    shutil.copytree(CHART, copy)
    chart = yaml.safe_load((copy / "Chart.yaml").read_text())
    chart.pop("dependencies", None)
    (copy / "Chart.yaml").write_text(yaml.safe_dump(chart, sort_keys=False))
    return copy


def render(chart: Path, *values_files: Path, extra: tuple[str, ...] = ()) -> list[dict]:
    """The manifests `helm template` renders, as dicts."""
    args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE]
    for path in values_files:
        args += ["-f", str(path)]
    out = helm(*args, *extra).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]
