"""Profiles: model validation, YAML seed, entitlement, local spawner settings."""

import dataclasses
import json
import re
from pathlib import Path

import pytest
from jupyterhub.spawner import LocalProcessSpawner

from desp_hub.profiles import (
    NotEntitled,
    Profile,
    ProfileError,
    entitled_profiles,
    find_entitled,
    groups_and_roles,
    load_profiles,
    local_spawner_settings,
    parse_bytes,
    realm_roles,
    validate_profiles,
)

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "hub" / "desp_hub" / "profiles.yaml"
REALM = REPO / "sandbox" / "desp_sandbox" / "realm" / "desp-realm.json"
GiB = 2**30


def valid(**changes):
    """A valid profile dict with `changes` applied (a value of ... removes the key)."""
    data = {
        "slug": "standard",
        "display_name": "Standard",
        "image": "ghcr.io/desp-hub/singleuser:0.1.0",
        "cpu_guarantee": 0.5,
        "cpu_limit": 2,
        "mem_guarantee": "1G",
        "mem_limit": "4G",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not ...}


GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}

INVALID = [
    pytest.param({"gpu_count": 1}, "gpu_count", id="unknown-key"),
    pytest.param({"image": ...}, "image", id="missing-image"),
    pytest.param({"mem_limit": None}, "mem_limit", id="null-mem-limit"),
    pytest.param({"slug": "Standard"}, "slug", id="slug-upper-case"),
    pytest.param({"slug": "my profile"}, "slug", id="slug-space"),
    pytest.param({"slug": "a/b"}, "slug", id="slug-slash"),
    pytest.param({"slug": "-standard"}, "slug", id="slug-leading-dash"),
    pytest.param({"slug": "x" * 64}, "slug", id="slug-too-long"),
    pytest.param({"slug": 7}, "slug", id="slug-not-text"),
    pytest.param({"display_name": "  "}, "display_name", id="display-name-blank"),
    pytest.param({"description": 3}, "description", id="description-not-text"),
    pytest.param({"cpu_limit": 0}, "cpu_limit", id="cpu-limit-zero"),
    pytest.param({"cpu_limit": -1}, "cpu_limit", id="cpu-limit-negative"),
    pytest.param({"cpu_limit": "two"}, "cpu_limit", id="cpu-limit-text"),
    pytest.param({"cpu_limit": float("inf")}, "cpu_limit", id="cpu-limit-infinite"),
    pytest.param({"cpu_guarantee": 0}, "cpu_guarantee", id="cpu-guarantee-zero"),
    pytest.param({"cpu_guarantee": 4}, "cpu_guarantee", id="cpu-guarantee-above-limit"),
    pytest.param({"mem_limit": "4X"}, "mem_limit", id="mem-limit-unknown-unit"),
    pytest.param({"mem_limit": "4g"}, "mem_limit", id="mem-limit-lower-case-unit"),
    pytest.param({"mem_limit": "0G"}, "mem_limit", id="mem-limit-zero"),
    pytest.param({"mem_limit": -5}, "mem_limit", id="mem-limit-negative"),
    pytest.param({"mem_limit": True}, "mem_limit", id="mem-limit-bool"),
    pytest.param({"mem_guarantee": "8G"}, "mem_guarantee", id="mem-guarantee-above-limit"),
    pytest.param({"gpus": -1}, "gpus", id="gpus-negative"),
    pytest.param({"gpus": 1.5}, "gpus", id="gpus-fraction"),
    pytest.param({"gpus": True}, "gpus", id="gpus-bool"),
    pytest.param({"gpus": 1}, "gpus", id="gpus-without-gpu-nodes"),
    pytest.param({"gpus": 1, "node_selector": {"disktype": "ssd"}}, "gpus", id="gpus-non-gpu-node-selector"),
    pytest.param({"gpu_type": "nvidia-a6000"}, "gpu_type", id="gpu-type-without-gpus"),
    pytest.param({"node_selector": ["gpu"]}, "node_selector", id="node-selector-not-mapping"),
    pytest.param({"node_selector": {"zone": 1}}, "node_selector", id="node-selector-value-not-text"),
    pytest.param({"tolerations": GPU_TOLERATION}, "tolerations", id="tolerations-not-list"),
    pytest.param({"tolerations": ["nvidia.com/gpu"]}, "tolerations[0]", id="toleration-not-mapping"),
    pytest.param({"tolerations": [{**GPU_TOLERATION, "tolerance": 1}]}, "tolerations[0]", id="toleration-unknown-key"),
    pytest.param({"tolerations": [{**GPU_TOLERATION, "operator": "In"}]}, "tolerations[0]", id="toleration-operator"),
    pytest.param({"tolerations": [{**GPU_TOLERATION, "effect": "NoRun"}]}, "tolerations[0]", id="toleration-effect"),
    pytest.param({"tolerations": [{**GPU_TOLERATION, "value": "x"}]}, "tolerations[0]", id="toleration-exists-value"),
    pytest.param({"tolerations": [{"operator": "Equal", "value": "x"}]}, "tolerations[0]", id="toleration-no-key"),
    pytest.param({"allowed_groups": "desp-users"}, "allowed_groups", id="allowed-groups-string"),
    pytest.param({"allowed_roles": ["hub-admin", 3]}, "allowed_roles", id="allowed-roles-not-names"),
    pytest.param({"dcu_per_hour": -0.5}, "dcu_per_hour", id="dcu-negative"),
    pytest.param({"idle_timeout": 0}, "idle_timeout", id="idle-timeout-zero"),
    pytest.param({"idle_timeout": "1h"}, "idle_timeout", id="idle-timeout-text"),
    pytest.param({"max_runtime": -1}, "max_runtime", id="max-runtime-negative"),
    pytest.param({"default": "yes"}, "default", id="default-not-bool"),
    pytest.param({"enabled": 1}, "enabled", id="enabled-not-bool"),
    pytest.param({"order": 1.5}, "order", id="order-fraction"),
]


@pytest.mark.parametrize("changes, field", INVALID)
def test_invalid_profile_names_field_and_slug(changes, field):
    with pytest.raises(ProfileError) as caught:
        Profile.from_dict(valid(**changes))
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.field == field
    assert repr(field) in str(error)
    if "slug" not in changes:
        assert error.slug == "standard" and "profile 'standard'" in str(error)


def test_not_a_mapping():
    with pytest.raises(ProfileError, match="expected a mapping"):
        Profile.from_dict(["standard"])


@pytest.mark.parametrize(
    "gpu_target",
    [
        pytest.param({"node_selector": {"nvidia.com/gpu.product": "NVIDIA-RTX-A6000"}}, id="node-selector"),
        pytest.param({"tolerations": [GPU_TOLERATION]}, id="toleration"),
        pytest.param({"node_selector": {"cloud.google.com/gke-accelerator": "nvidia-l4"}}, id="accelerator-label"),
    ],
)
def test_gpus_accept_a_gpu_node_selector_or_toleration(gpu_target):
    profile = Profile.from_dict(valid(gpus=1, gpu_type="nvidia-a6000", **gpu_target))
    assert profile.gpus == 1


@pytest.mark.parametrize(
    "value, expected",
    [
        pytest.param(1073741824, GiB, id="int-bytes"),
        pytest.param(4096.0, 4096, id="whole-float"),
        pytest.param("4096", 4096, id="digits"),
        pytest.param("512K", 512 * 2**10, id="K"),
        pytest.param("512M", 512 * 2**20, id="M"),
        pytest.param("2G", 2 * GiB, id="G"),
        pytest.param("8Gi", 8 * GiB, id="Gi"),
        pytest.param("1.5G", 3 * GiB // 2, id="fraction"),
        pytest.param("1T", 2**40, id="T"),
        pytest.param("4GB", 4 * GiB, id="GB"),
    ],
)
def test_parse_bytes(value, expected):
    assert parse_bytes(value) == expected


@pytest.mark.parametrize("value", ["4i", "G", "4m", "1e9", "", None, [4]], ids=repr)
def test_parse_bytes_rejects(value):
    with pytest.raises(ProfileError, match="4G or 512M"):
        parse_bytes(value, field="mem_limit")


def test_defaults_and_round_trip():
    profile = Profile.from_dict(valid(allowed_groups=["desp-users", "desp-users"], max_runtime=None))
    assert profile.cpu_limit == 2.0 and isinstance(profile.cpu_limit, float)
    assert profile.mem_limit == 4 * GiB and profile.mem_guarantee == GiB
    assert profile.allowed_groups == ("desp-users",)
    assert (profile.gpus, profile.gpu_type, profile.max_runtime, profile.idle_timeout) == (0, None, 0, 3600)
    assert (profile.default, profile.enabled, profile.order, profile.dcu_per_hour) == (False, True, 0, 0.0)
    plain = profile.to_dict()
    assert set(plain) == set(Profile.field_names())
    json.dumps(plain)
    assert Profile.from_dict(plain) == profile


def test_profile_is_immutable():
    profile = Profile.from_dict(valid(node_selector={"zone": "a"}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.cpu_limit = 64
    with pytest.raises(TypeError):
        profile.node_selector["zone"] = "b"
    source = {"zone": "a"}
    profile = Profile.from_dict(valid(node_selector=source))
    source["zone"] = "b"
    assert profile.node_selector["zone"] == "a"


@pytest.mark.parametrize(
    "profiles, field",
    [
        pytest.param([valid(), valid(display_name="Again")], "slug", id="duplicate-slug"),
        pytest.param([valid(default=True), valid(slug="power", default=True)], "default", id="two-defaults"),
    ],
)
def test_rules_across_profiles(profiles, field):
    with pytest.raises(ProfileError) as caught:
        validate_profiles(Profile.from_dict(p) for p in profiles)
    assert caught.value.field == field and repr(field) in str(caught.value)


def test_seed_loads_sorted_with_realistic_values():
    profiles = load_profiles(SEED)
    assert [p.slug for p in profiles] == ["standard", "power", "ai"]
    standard, power, ai = profiles
    assert [p.slug for p in profiles if p.default] == ["standard"]
    assert (standard.cpu_guarantee, standard.cpu_limit, standard.mem_guarantee, standard.mem_limit) == (
        0.5, 2.0, GiB, 4 * GiB
    )
    assert (standard.allowed_groups, standard.dcu_per_hour, standard.idle_timeout) == (("desp-users",), 1.0, 3600)
    assert (power.cpu_limit, power.mem_limit, power.idle_timeout, power.max_runtime) == (8.0, 32 * GiB, 7200, 86400)
    assert (power.allowed_groups, power.allowed_roles, power.dcu_per_hour) == (("power-users",), ("hub-admin",), 4.0)
    assert (ai.cpu_limit, ai.mem_limit, ai.gpus, ai.gpu_type) == (8.0, 48 * GiB, 1, "nvidia-a6000")
    assert ai.image == "ghcr.io/desp-hub/singleuser-ai:0.1.0"
    assert "nvidia.com/gpu.product" in ai.node_selector
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in ai.tolerations
    assert (ai.allowed_groups, ai.allowed_roles, ai.dcu_per_hour, ai.max_runtime) == (
        ("ai-users",), ("hub-admin",), 10.0, 43200
    )


@pytest.mark.parametrize(
    "text, message",
    [
        pytest.param("- slug: standard\n", "exactly one key", id="bare-list"),
        pytest.param("profiles: {}\nextra: 1\n", "exactly one key", id="extra-top-level-key"),
        pytest.param("profiles: {slug: standard}\n", "must be a list", id="profiles-not-list"),
        pytest.param("profiles:\n  - slug: standard\n    cpu: 2\n", "'cpu'", id="unknown-profile-key"),
    ],
)
def test_load_rejects_bad_files(tmp_path, text, message):
    path = tmp_path / "profiles.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError, match=message):
        load_profiles(path)


@pytest.fixture(scope="module")
def seed():
    return load_profiles(SEED)


@pytest.fixture(scope="module")
def demo_users():
    """{username: (groups, realm roles)} from the sandbox realm; the groups mapper sends names, not paths."""
    realm = json.loads(REALM.read_text())
    return {
        user["username"]: ([g.lstrip("/") for g in user.get("groups", [])], user.get("realmRoles", []))
        for user in realm["users"]
    }


@pytest.mark.parametrize(
    "username, expected",
    [
        pytest.param("researcher", ["standard"], id="researcher"),
        pytest.param("poweruser", ["standard", "power"], id="poweruser"),
        pytest.param("aiuser", ["standard", "ai"], id="aiuser"),
        pytest.param("admin", ["standard", "power", "ai"], id="admin"),
        pytest.param("executive", ["standard"], id="executive"),
        pytest.param("outsider", [], id="outsider"),
    ],
)
def test_demo_user_entitlements(seed, demo_users, username, expected):
    groups, roles = demo_users[username]
    assert [p.slug for p in entitled_profiles(seed, groups, roles)] == expected
    for profile in seed:
        if profile.slug in expected:
            assert find_entitled(seed, profile.slug, groups, roles) is profile
        else:
            with pytest.raises(NotEntitled, match=re.escape(f"may not start the {profile.display_name} profile")):
                find_entitled(seed, profile.slug, groups, roles)


def test_open_and_disabled_profiles():
    open_profile = Profile.from_dict(valid(slug="open"))
    closed = Profile.from_dict(valid(slug="closed", allowed_roles=["hub-admin"], enabled=False))
    assert entitled_profiles([open_profile, closed], [], []) == [open_profile]
    assert entitled_profiles([open_profile, closed], [], ["hub-admin"]) == [open_profile]
    with pytest.raises(NotEntitled, match="currently unavailable") as caught:
        find_entitled([open_profile, closed], "closed", [], ["hub-admin"])
    assert caught.value.slug == "closed"
    assert caught.value.jupyterhub_message == str(caught.value)


def test_unknown_slug_is_not_entitled(seed):
    with pytest.raises(NotEntitled, match="no server profile called 'gpu-xl'"):
        find_entitled(seed, "gpu-xl", ["desp-users"], [])


@pytest.mark.parametrize(
    "username, expected",
    [
        pytest.param("aiuser", "standard", id="default-profile"),
        pytest.param("admin", "standard", id="admin-default"),
    ],
)
def test_no_slug_means_the_default(seed, demo_users, username, expected):
    assert find_entitled(seed, None, *demo_users[username]).slug == expected


def test_no_slug_without_default_takes_the_first_entitled(seed):
    assert find_entitled(seed, "", ["ai-users"], []).slug == "ai"


def test_no_slug_and_nothing_entitled(seed, demo_users):
    with pytest.raises(NotEntitled, match="may not start any server profile"):
        find_entitled(seed, None, *demo_users["outsider"])


@pytest.mark.parametrize(
    "auth_state, expected",
    [
        pytest.param(
            {"oauth_user": {"realm_access": {"roles": ["hub-admin", "desp-user"]}}},
            ["hub-admin", "desp-user"],
            id="keycloak-claims",
        ),
        pytest.param(
            {"roles": ["hub-admin"], "oauth_user": {"realm_access": {"roles": ["stale"]}}},
            ["hub-admin"],
            id="recorded-by-authenticator-wins",
        ),
        pytest.param({"roles": [], "oauth_user": {"realm_access": {"roles": ["x"]}}}, [], id="recorded-none"),
        pytest.param({"oauth_user": {"preferred_username": "x"}}, [], id="no-realm-access"),
        pytest.param({}, [], id="empty"),
        pytest.param(None, [], id="no-auth-state"),
    ],
)
def test_realm_roles(auth_state, expected):
    assert realm_roles(auth_state) == expected


@pytest.mark.parametrize(
    "auth_state, hub_groups, expected",
    [
        pytest.param({"groups": ["ai-users"], "roles": ["hub-admin"]}, ["old"], (["ai-users"], ["hub-admin"]),
                     id="recorded-groups-win"),
        pytest.param({"roles": ["hub-admin"]}, ["desp-users"], (["desp-users"], ["hub-admin"]), id="hub-groups"),
        pytest.param(None, ["desp-users"], (["desp-users"], []), id="no-auth-state"),
    ],
)
def test_groups_and_roles(auth_state, hub_groups, expected):
    assert groups_and_roles(auth_state, hub_groups) == expected


def test_local_spawner_settings(seed):
    standard = seed[0]
    settings = local_spawner_settings(standard)
    assert settings == {
        "mem_limit": 4 * GiB,
        "mem_guarantee": GiB,
        "cpu_limit": 2.0,
        "cpu_guarantee": 0.5,
        "environment": {"DESP_PROFILE": "standard", "DESP_DCU_PER_HOUR": "1.0"},
        "memory_rlimit": 4 * GiB,
    }
    # The four resource settings are JupyterHub Spawner traits and keep their values when applied.
    spawner = LocalProcessSpawner()
    for name in ("mem_limit", "mem_guarantee", "cpu_limit", "cpu_guarantee"):
        setattr(spawner, name, settings[name])
        assert getattr(spawner, name) == settings[name]


def test_local_settings_are_fresh_copies(seed):
    first = local_spawner_settings(seed[0])
    first["environment"]["DESP_PROFILE"] = "changed"
    assert local_spawner_settings(seed[0])["environment"]["DESP_PROFILE"] == "standard"
