"""A catalogue stopped and started again on the same data directory: the PostgreSQL cluster is reused (same
system identifier, no second initdb), orders survive with hrefs following the new port, and nothing is left
running after a stop. Uses its own catalogue process beside the session's (sharing the generated sample data)."""

import os
import shutil
import struct
import time
from pathlib import Path

import requests

from tests.conftest_catalogue import CatalogueProcess, make_data_dir

EXTREMES = "EO.ECMWF.DAT.DT_EXTREMES"


def system_identifier(data_dir):
    """The cluster's identity: initdb writes a new one, a restart keeps it (first 8 bytes of global/pg_control)."""
    return struct.unpack("<Q", (data_dir / "catalogue/pg/data/global/pg_control").read_bytes()[:8])[0]


def postmaster_pid(data_dir):
    return int((data_dir / "catalogue/pg/data/postmaster.pid").read_text().split()[0])


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for_status(stac_url, item_id, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = requests.get(f"{stac_url}/collections/{EXTREMES}/items/{item_id}", timeout=10).json()
        if item["properties"]["order:status"] != "ordered":
            return item
        time.sleep(0.2)
    raise AssertionError("order not done")


def test_restart_reuses_the_cluster_and_keeps_orders(sandbox_catalogue):
    data_dir = make_data_dir("desp-catalogue-restart-")
    (data_dir / "cache").symlink_to(sandbox_catalogue.cache_dir)  # the sample data exists: only the database is new
    first = CatalogueProcess(data_dir, sandbox_catalogue.jwks_url, sandbox_catalogue.issuer, order_delay=0.2,
                             log_name="first.log")  # fmt: skip
    second = CatalogueProcess(data_dir, sandbox_catalogue.jwks_url, sandbox_catalogue.issuer, log_name="second.log")
    try:
        first.start()
        identity = system_identifier(data_dir)
        postgres_pid = postmaster_pid(data_dir)
        body = {"param": "2t", "date": "20240505", "step": "0/6"}
        ordered = requests.post(f"{first.stac_url}/collections/{EXTREMES}/order", json=body,
                                headers=sandbox_catalogue.headers(), timeout=30).json()  # fmt: skip
        done = wait_for_status(first.stac_url, ordered["id"])
        assert done["properties"]["order:status"] == "succeeded"
        assert done["assets"]["downloadLink"]["href"].startswith(first.cache_url)

        assert first.stop() == 0
        assert not alive(postgres_pid), "postgres outlived the catalogue"
        assert "ready at" in first.log()

        second.start()
        assert second.port != first.port
        assert system_identifier(data_dir) == identity  # same cluster, no second initdb
        assert "already at version" in second.log()  # pgstac not migrated again
        kept = requests.get(f"{second.stac_url}/collections/{EXTREMES}/items/{ordered['id']}", timeout=10).json()
        assert kept["properties"]["order:status"] == "succeeded"
        href = kept["assets"]["downloadLink"]["href"]
        assert href.startswith(second.cache_url), "stored hrefs follow the new address"
        assert requests.get(f"{href}/.zmetadata", headers=sandbox_catalogue.headers(), timeout=10).status_code == 200
        placeholder = requests.get(f"{second.stac_url}/collections/{EXTREMES}/items/DT_EXTREMES_2T_20240505",
                                   timeout=10).json()  # fmt: skip
        retrieve = next(link for link in placeholder["links"] if link["rel"] == "retrieve")
        assert retrieve["href"] == f"{second.stac_url}/collections/{EXTREMES}/order"
        print(f"catalogue start: first {first.startup_seconds:.1f}s (new cluster, data present), "
              f"restart {second.startup_seconds:.1f}s")
        assert second.startup_seconds < first.startup_seconds + 5
    finally:
        first.stop()
        second.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def test_cluster_moves_beside_postgres_home_when_the_data_dir_is_private(tmp_path):
    """pytest's tmp dirs are private to root: the cluster goes under the postgres home, symlinked from the data dir,
    and is removed by a later relocation once its data dir is gone."""
    import pwd

    from desp_sandbox.catalogue.cluster import Cluster

    if os.geteuid() != 0:
        return  # only root has to hand the cluster to the postgres user
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    first = Cluster(private / "one" / "catalogue" / "pg")
    assert first.initdb()
    link = private / "one" / "catalogue" / "pg"
    assert link.is_symlink()
    target = link.resolve()
    assert target.parent == Path(pwd.getpwnam("postgres").pw_dir) / "desp-sandbox"
    assert (link / "data" / "PG_VERSION").exists()
    assert not Cluster(link).initdb()  # reused through the symlink, not made again

    shutil.rmtree(private / "one")
    second = Cluster(private / "two" / "catalogue" / "pg")
    try:
        second.initdb()
        assert not target.exists(), "the orphaned cluster of the deleted data dir was left behind"
    finally:
        shutil.rmtree((private / "two" / "catalogue" / "pg").resolve(), ignore_errors=True)
