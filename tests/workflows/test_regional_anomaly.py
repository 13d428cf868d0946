"""The published-workflow example notebooks/workflows/regional_anomaly.ipynb, run by papermill (as the workflows
service's local executor runs it) against the sandbox catalogue and cache: its parameters cell is what the service
will declare, and its products (CSV, PNG) hold the anomaly computed independently here from the Zarr store."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import xarray as xr

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "workflows" / "regional_anomaly.ipynb"
ERA5_PATH = "era5/reanalysis-era5-single-levels-v0.zarr"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_papermill(tmp_path, sandbox_catalogue, parameters):
    """`python -m papermill` in the venv's kernel, with the environment a run gets (catalogue URL, a token)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("JUPYTERHUB_", "DESP_"))}
    env.update(
        MPLBACKEND="Agg",  # as the service's local executor sets it: the map must show without the inline backend
        DESP_CATALOGUE_URL=sandbox_catalogue.stac_url,
        DESP_ACCESS_TOKEN=sandbox_catalogue.token_for("researcher"),
    )
    parameters_file = tmp_path / "parameters.json"
    parameters_file.write_text(json.dumps(parameters))
    command = [sys.executable, "-m", "papermill", str(NOTEBOOK), str(tmp_path / "output.ipynb"),
               "-f", str(parameters_file), "--kernel", "python3", "--cwd", str(tmp_path)]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=280)


def test_the_parameters_cell_declares_typed_defaults():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    [cell] = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    namespace = {}
    exec(cell.source, namespace)  # the notebook in this repository: trusted; plain literals only
    assert namespace["variable"] == "t2m"
    assert namespace["region_bbox"] == [-10.0, 35.0, 30.0, 60.0]
    assert all(isinstance(namespace[name], str) for name in ("baseline_start", "period_end", "output_name"))
    # Published without outputs: nothing stale is stored with the version.
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code")


def test_anomaly_products_match_the_source_data(tmp_path, sandbox_catalogue):
    parameters = {
        "region_bbox": [5.0, 40.0, 15.0, 48.0],
        "baseline_start": "2024-01-01T00:00:00Z",
        "baseline_end": "2024-01-01T11:00:00Z",
        "period_start": "2024-01-02T12:00:00Z",
        "period_end": "2024-01-02T23:00:00Z",
        "output_name": "alps",
    }
    result = run_papermill(tmp_path, sandbox_catalogue, parameters)
    assert result.returncode == 0, result.stderr[-3000:]

    rows = list(csv.DictReader((tmp_path / "alps.csv").open()))
    assert len(rows) == 9 * 11  # 1° grid: latitudes 40..48, longitudes 5..15
    assert {float(r["latitude"]) for r in rows} == set(map(float, range(40, 49)))
    assert {float(r["longitude"]) for r in rows} == set(map(float, range(5, 16)))

    # The same anomaly computed straight from the cache directory's Zarr store (longitudes 0..359 there).
    t2m = xr.open_zarr(sandbox_catalogue.cache_dir / ERA5_PATH)["t2m"]
    box = t2m.sel(latitude=slice(48, 40), longitude=slice(5, 15))
    expected = (box.sel(valid_time=slice("2024-01-02T12:00", "2024-01-02T23:00")).mean("valid_time")
                - box.sel(valid_time=slice("2024-01-01T00:00", "2024-01-01T11:00")).mean("valid_time"))  # fmt: skip
    for row in rows[::7]:
        want = float(expected.sel(latitude=float(row["latitude"]), longitude=float(row["longitude"])))
        assert float(row["anomaly"]) == pytest.approx(want, abs=1e-3)
    assert np.isfinite([float(r["anomaly"]) for r in rows]).all()

    png = (tmp_path / "alps.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 5000

    # The executed notebook shows the map (an image output) for the HTML rendering of the run.
    executed = nbformat.read(tmp_path / "output.ipynb", as_version=4)
    assert any("image/png" in output.get("data", {}) for cell in executed.cells for output in cell.get("outputs", []))
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "output_name = \"alps\"" in injected[0].source


def test_a_hostile_output_name_stops_the_run_before_writing(tmp_path, sandbox_catalogue):
    result = run_papermill(tmp_path, sandbox_catalogue, {"output_name": "../../etc/evil"})
    assert result.returncode != 0
    assert "output_name must be a plain file name" in result.stderr + result.stdout
    assert not list(tmp_path.glob("*.csv")) and not list(tmp_path.parent.glob("etc"))
