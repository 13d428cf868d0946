"""Dask limits per realm role and per profile, and the cluster options they become (no gateway needed)."""

import pytest
from traitlets import TraitError
from traitlets.config import Config

from desp_hub.dask_gateway.limits import DEFAULT_ROLE_LIMITS, GIB, DespDaskLimits, NoDaskRole
from desp_hub.dask_gateway.options import DespClusterConfig, cluster_options


def limits(**config):
    return DespDaskLimits(config=Config({"DespDaskLimits": config}))


def test_the_default_roles_are_the_data_lakes():
    low = limits().limits_for("researcher", ["offline_access", "stack-dask-low"])
    assert (low.max_workers, low.max_worker_cores, low.max_worker_memory_gib, low.idle_timeout) == (2, 1, 2, 1800)
    assert set(DEFAULT_ROLE_LIMITS) == {"stack-dask-low", "stack-dask-medium", "stack-dask-high"}


def test_the_most_generous_dask_role_wins():
    both = limits().limits_for("u", ["stack-dask-low", "stack-dask-high", "stack-dask-medium"])
    assert both.max_workers == 8 and both.sources["max_workers"] == "role stack-dask-high"


def test_a_user_without_a_dask_role_is_refused_with_what_it_takes():
    with pytest.raises(NoDaskRole) as refusal:
        limits().limits_for("executive", ["executive-statistics"])
    assert str(refusal.value) == (
        "executive may not create Dask clusters: that takes one of the realm roles stack-dask-high, "
        "stack-dask-low, stack-dask-medium; ask your DESP administrator"
    )


def test_a_profile_narrows_the_role_and_is_named_as_the_source():
    narrowed = limits(profile_limits={"standard": {"max_workers": 1, "max_worker_memory_gib": 8}}).limits_for(
        "u", ["stack-dask-medium"], ["standard"]
    )
    assert narrowed.max_workers == 1 and narrowed.sources["max_workers"] == "profile standard"
    # a profile never widens a role's limit
    assert narrowed.max_worker_memory_gib == 4 and narrowed.sources["max_worker_memory_gib"] == "role stack-dask-medium"
    assert narrowed.refusal("max_workers", 3) == "at most 1 worker for profile standard (asked for 3)"
    # a profile the user does not run changes nothing
    assert limits(profile_limits={"ai": {"max_workers": 1}}).limits_for("u", ["stack-dask-low"], []).max_workers == 2


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"role_limits": {"r": {"max_workers": 2}}}, "must set"),
        ({"role_limits": {"r": dict(DEFAULT_ROLE_LIMITS["stack-dask-low"], max_workers=0)}}, "at least 1"),
        ({"role_limits": {"r": dict(DEFAULT_ROLE_LIMITS["stack-dask-low"], max_workers=1.5)}}, "whole number"),
        ({"profile_limits": {"p": {"max_wrokers": 1}}}, "unknown"),
        ({"profile_limits": {"p": {"max_worker_memory_gib": "lots"}}}, "must be a number"),
    ],
)
def test_misconfigured_limits_fail_at_start_up(config, message):
    with pytest.raises((TraitError, ValueError), match=message):
        limits(**config)


def low_options():
    return cluster_options(limits().limits_for("researcher", ["stack-dask-low"]))


def test_the_options_become_the_clusters_configuration_with_the_limits_the_user_does_not_choose():
    options = low_options()
    assert [field["field"] for field in options.get_specification()] == ["worker_cores", "worker_memory"]
    chosen = options.parse_options({"worker_memory": 1.5})
    overrides = options.get_configuration(chosen, None)
    config = DespClusterConfig(**overrides)
    assert (config.worker_cores, config.worker_memory) == (1, int(1.5 * GIB))
    assert config.cluster_max_workers == 2 and config.max_workers_source == "role stack-dask-low"
    assert config.idle_timeout == 1800
    assert config.to_dict()["max_workers_source"] == "role stack-dask-low"  # recorded with the cluster


@pytest.mark.parametrize(
    ("asked", "message"),
    [
        ({"worker_cores": 2}, "at most 1 core per worker for role stack-dask-low (asked for 2)"),
        ({"worker_memory": 3}, "at most 2 GiB of memory per worker for role stack-dask-low (asked for 3 GiB)"),
    ],
)
def test_options_beyond_the_limits_are_refused_with_the_reason(asked, message):
    options = low_options()
    with pytest.raises(ValueError) as refusal:
        options.get_configuration(options.parse_options(asked), None)
    assert str(refusal.value) == message


def test_both_backends_offer_the_desp_options_and_record_the_desp_configuration():
    from desp_hub.dask_gateway.backend import DespLocalBackend
    from desp_hub.dask_gateway.kube_backend import DespKubeBackend, DespKubeClusterConfig

    local = DespLocalBackend()
    assert local.cluster_options == local.options_for and local.cluster_config_class is DespClusterConfig
    kube = DespKubeBackend()
    assert kube.cluster_options == kube.options_for and kube.cluster_config_class is DespKubeClusterConfig
    assert "max_workers_source" in DespKubeClusterConfig().to_dict()
