"""Server profiles: the model, its validation, entitlement, and local-spawner settings.

A profile is what a user picks before a server starts: image, CPU and memory, GPUs, where it may be scheduled,
who may use it, what it costs (DCU per hour) and how long it may live. The model takes and gives plain dicts
(`Profile.from_dict`, `Profile.to_dict`) so that the YAML seed (`load_profiles`) and the hub-side database store
share one validation. Nothing here does I/O except `load_profiles`, which reads the file it is given.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

__all__ = [
    "NotEntitled",
    "Profile",
    "ProfileError",
    "entitled_profiles",
    "find_entitled",
    "groups_and_roles",
    "load_profiles",
    "local_spawner_settings",
    "parse_bytes",
    "profile_environment",
    "realm_roles",
    "validate_profiles",
]

# Lower-case letters, digits and inner dashes: safe in a URL path, a form value, a label and a DNS name.
SLUG_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")

# Same convention as JupyterHub's ByteSpecification (the Spawner.mem_limit trait): suffixes are powers of 1024,
# so "2G" here means what "2G" means in jupyterhub_config.py. The Kubernetes spellings ("Gi") are accepted too.
_BYTE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
# Upper-case only: in Kubernetes a lower-case "m" means milli, and JupyterHub rejects lower-case suffixes too.
_BYTES_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([KMGT])i?)?B?\s*$")

_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
_TOLERATION_OPERATORS = {"Exists", "Equal"}
_TOLERATION_EFFECTS = {"", "NoSchedule", "PreferNoSchedule", "NoExecute"}

# A node selector key or toleration key mentioning one of these is taken as "this targets GPU nodes".
_GPU_KEY_MARKERS = ("gpu", "accelerator")


NOTHING_ENTITLED = "Your account may not start any server profile. Ask the DESP service desk for access."


class ProfileError(ValueError):
    """A profile definition is invalid. `field` names the offending field, `slug` the profile (if known)."""

    def __init__(self, message: str, *, field: str | None = None, slug: str | None = None):
        self.field = field
        self.slug = slug
        where = f"profile {slug!r}" if slug else "profile"
        prefix = f"{where}, field {field!r}" if field else where
        super().__init__(f"{prefix}: {message}")


class NotEntitled(Exception):
    """The user may not start the requested profile (unknown, disabled, or not allowed).

    The message is meant for the user; JupyterHub shows `jupyterhub_message` on its error and spawn-progress pages.
    """

    def __init__(self, message: str, *, slug: str | None = None):
        self.slug = slug
        self.jupyterhub_message = message
        super().__init__(message)


def parse_bytes(value: Any, *, field: str = "bytes", slug: str | None = None) -> int:
    """Turn 1073741824, "1G", "1Gi", "512M" or "1.5G" into a whole number of bytes (suffixes are powers of 1024)."""
    if isinstance(value, bool):
        raise ProfileError(f"expected a size such as 4G or 512M, got {value!r}", field=field, slug=slug)
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and (match := _BYTES_PATTERN.match(value)):
        amount, unit = match.groups()
        number = int(float(amount) * _BYTE_UNITS[unit or ""])
    else:
        raise ProfileError(f"expected a size such as 4G or 512M, got {value!r}", field=field, slug=slug)
    if number <= 0:
        raise ProfileError(f"must be positive, got {value!r}", field=field, slug=slug)
    return number


def _number(data: Mapping, field: str, slug: str | None, *, minimum: float = 0, strict: bool = True) -> float:
    value = data[field]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProfileError(f"expected a number, got {value!r}", field=field, slug=slug)
    if value < minimum or (strict and value == minimum):
        bound = f"greater than {minimum:g}" if strict else f"at least {minimum:g}"
        raise ProfileError(f"must be {bound}, got {value!r}", field=field, slug=slug)
    return float(value)


def _integer(data: Mapping, field: str, slug: str | None, *, minimum: int = 0, strict: bool = False) -> int:
    value = data[field]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProfileError(f"expected a whole number, got {value!r}", field=field, slug=slug)
    if value < minimum or (strict and value == minimum):
        bound = f"greater than {minimum}" if strict else f"at least {minimum}"
        raise ProfileError(f"must be {bound}, got {value!r}", field=field, slug=slug)
    return value


def _text(data: Mapping, field: str, slug: str | None, *, required: bool = True) -> str:
    value = data[field]
    if not isinstance(value, str) or (required and not value.strip()):
        raise ProfileError(f"expected a non-empty string, got {value!r}", field=field, slug=slug)
    return value.strip() if required else value


def _flag(data: Mapping, field: str, slug: str | None) -> bool:
    value = data[field]
    if not isinstance(value, bool):
        raise ProfileError(f"expected true or false, got {value!r}", field=field, slug=slug)
    return value


def _names(data: Mapping, field: str, slug: str | None) -> tuple[str, ...]:
    value = data[field]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ProfileError(f"expected a list of names, got {value!r}", field=field, slug=slug)
    return tuple(dict.fromkeys(v.strip() for v in value))


def _node_selector(data: Mapping, slug: str | None) -> Mapping[str, str]:
    value = data["node_selector"]
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in value.items()
    ):
        raise ProfileError(
            f"expected a mapping of label to string value, got {value!r}", field="node_selector", slug=slug
        )
    return MappingProxyType(dict(value))


def _tolerations(data: Mapping, slug: str | None) -> tuple[Mapping[str, Any], ...]:
    value = data["tolerations"]
    if not isinstance(value, (list, tuple)):
        raise ProfileError(f"expected a list of Kubernetes tolerations, got {value!r}", field="tolerations", slug=slug)
    tolerations = []
    for index, toleration in enumerate(value):
        where = f"tolerations[{index}]"
        if not isinstance(toleration, Mapping):
            raise ProfileError(f"expected a mapping, got {toleration!r}", field=where, slug=slug)
        unknown = sorted(set(toleration) - _TOLERATION_KEYS)
        if unknown:
            raise ProfileError(
                f"unknown keys {unknown}; a toleration has {sorted(_TOLERATION_KEYS)}", field=where, slug=slug
            )
        operator = toleration.get("operator", "Equal")
        if operator not in _TOLERATION_OPERATORS:
            raise ProfileError(f"operator must be Exists or Equal, got {operator!r}", field=where, slug=slug)
        if toleration.get("effect", "") not in _TOLERATION_EFFECTS:
            raise ProfileError(
                f"effect must be one of NoSchedule, PreferNoSchedule, NoExecute, got {toleration['effect']!r}",
                field=where,
                slug=slug,
            )
        if operator == "Exists" and toleration.get("value"):
            raise ProfileError("operator Exists takes no value", field=where, slug=slug)
        if operator == "Equal" and not toleration.get("key"):
            raise ProfileError("operator Equal needs a key", field=where, slug=slug)
        for text_key in ("key", "value"):
            if text_key in toleration and not isinstance(toleration[text_key], str):
                raise ProfileError(f"{text_key} must be a string", field=where, slug=slug)
        seconds = toleration.get("tolerationSeconds")
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int)):
            raise ProfileError("tolerationSeconds must be a whole number", field=where, slug=slug)
        tolerations.append(MappingProxyType(dict(toleration)))
    return tuple(tolerations)


def _mentions_gpu(key: str) -> bool:
    return any(marker in key.lower() for marker in _GPU_KEY_MARKERS)


@dataclasses.dataclass(frozen=True)
class Profile:
    """One server profile. Build it with `Profile.from_dict`, which validates; sizes are bytes, times seconds."""

    slug: str
    display_name: str
    image: str
    cpu_guarantee: float
    cpu_limit: float
    mem_guarantee: int
    mem_limit: int
    description: str = ""
    gpus: int = 0
    gpu_type: str | None = None
    node_selector: Mapping[str, str] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    tolerations: tuple[Mapping[str, Any], ...] = ()
    allowed_groups: tuple[str, ...] = ()
    allowed_roles: tuple[str, ...] = ()
    dcu_per_hour: float = 0.0
    idle_timeout: int = 3600
    max_runtime: int = 0  # 0: no limit
    default: bool = False
    enabled: bool = True
    order: int = 0

    REQUIRED = ("slug", "display_name", "image", "cpu_guarantee", "cpu_limit", "mem_guarantee", "mem_limit")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The keys a profile dict may carry."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """Validate a plain dict (from YAML, a form or the database) and build a Profile.

        Raises `ProfileError` naming the profile and the field on the first problem found.
        """
        if not isinstance(data, Mapping):
            raise ProfileError(f"expected a mapping of fields, got {type(data).__name__}")
        raw_slug = data.get("slug")
        slug = raw_slug if isinstance(raw_slug, str) and raw_slug else None

        unknown = sorted(set(data) - set(cls.field_names()))
        if unknown:
            raise ProfileError(
                f"unknown key(s) {', '.join(map(repr, unknown))}; known keys are {', '.join(cls.field_names())}",
                field=unknown[0],
                slug=slug,
            )
        for name in cls.REQUIRED:
            if data.get(name) is None:
                raise ProfileError("is required", field=name, slug=slug)

        defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
        defaults.update(node_selector={}, tolerations=[], allowed_groups=[], allowed_roles=[])
        merged = {**defaults, **{k: v for k, v in data.items() if v is not None}}

        slug = _text(merged, "slug", slug)
        if not SLUG_PATTERN.match(slug):
            raise ProfileError(
                f"{slug!r} is not URL-safe: use 1-63 lower-case letters, digits and inner dashes",
                field="slug",
                slug=slug,
            )

        values: dict[str, Any] = {
            "slug": slug,
            "display_name": _text(merged, "display_name", slug),
            "description": _text(merged, "description", slug, required=False),
            "image": _text(merged, "image", slug),
            "cpu_guarantee": _number(merged, "cpu_guarantee", slug),
            "cpu_limit": _number(merged, "cpu_limit", slug),
            "mem_guarantee": parse_bytes(merged["mem_guarantee"], field="mem_guarantee", slug=slug),
            "mem_limit": parse_bytes(merged["mem_limit"], field="mem_limit", slug=slug),
            "gpus": _integer(merged, "gpus", slug),
            "gpu_type": None,
            "node_selector": _node_selector(merged, slug),
            "tolerations": _tolerations(merged, slug),
            "allowed_groups": _names(merged, "allowed_groups", slug),
            "allowed_roles": _names(merged, "allowed_roles", slug),
            "dcu_per_hour": _number(merged, "dcu_per_hour", slug, strict=False),
            "idle_timeout": _integer(merged, "idle_timeout", slug, strict=True),
            "max_runtime": _integer(merged, "max_runtime", slug),
            "default": _flag(merged, "default", slug),
            "enabled": _flag(merged, "enabled", slug),
            "order": _integer(merged, "order", slug, minimum=-(2**31)),
        }
        if merged["gpu_type"] is not None:
            values["gpu_type"] = _text(merged, "gpu_type", slug)

        for resource, unit in (("cpu", "cores"), ("mem", "bytes")):
            guarantee, limit = values[f"{resource}_guarantee"], values[f"{resource}_limit"]
            if guarantee > limit:
                raise ProfileError(
                    f"{resource}_guarantee ({guarantee:g} {unit}) exceeds {resource}_limit ({limit:g} {unit})",
                    field=f"{resource}_guarantee",
                    slug=slug,
                )
        if values["gpu_type"] and not values["gpus"]:
            raise ProfileError("gpu_type is set but gpus is 0", field="gpu_type", slug=slug)
        if values["gpus"]:
            targets_gpu_nodes = any(_mentions_gpu(key) for key in values["node_selector"]) or any(
                _mentions_gpu(t.get("key", "")) for t in values["tolerations"]
            )
            if not targets_gpu_nodes:
                raise ProfileError(
                    "a profile with GPUs needs a GPU node_selector label or a GPU toleration "
                    "(for example nvidia.com/gpu.product, or the nvidia.com/gpu NoSchedule toleration)",
                    field="gpus",
                    slug=slug,
                )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON- and YAML-serialisable dict; `Profile.from_dict(p.to_dict()) == p`."""
        return {
            "slug": self.slug,
            "display_name": self.display_name,
            "description": self.description,
            "image": self.image,
            "cpu_guarantee": self.cpu_guarantee,
            "cpu_limit": self.cpu_limit,
            "mem_guarantee": self.mem_guarantee,
            "mem_limit": self.mem_limit,
            "gpus": self.gpus,
            "gpu_type": self.gpu_type,
            "node_selector": dict(self.node_selector),
            "tolerations": [dict(t) for t in self.tolerations],
            "allowed_groups": list(self.allowed_groups),
            "allowed_roles": list(self.allowed_roles),
            "dcu_per_hour": self.dcu_per_hour,
            "idle_timeout": self.idle_timeout,
            "max_runtime": self.max_runtime,
            "default": self.default,
            "enabled": self.enabled,
            "order": self.order,
        }

    @property
    def is_open(self) -> bool:
        """True when neither groups nor roles restrict the profile: every logged-in user may use it."""
        return not (self.allowed_groups or self.allowed_roles)

    def allows(self, groups: Iterable[str], roles: Iterable[str]) -> bool:
        """Whether a user with these groups and realm roles may use the profile (ignores `enabled`)."""
        if self.is_open:
            return True
        return bool(set(self.allowed_groups) & set(groups)) or bool(set(self.allowed_roles) & set(roles))


def validate_profiles(profiles: Iterable[Profile]) -> list[Profile]:
    """Check rules that span profiles (unique slugs, at most one default); return them sorted by (order, slug)."""
    ordered = sorted(profiles, key=lambda p: (p.order, p.slug))
    seen: set[str] = set()
    for profile in ordered:
        if profile.slug in seen:
            raise ProfileError("is used by more than one profile", field="slug", slug=profile.slug)
        seen.add(profile.slug)
    defaults = [p.slug for p in ordered if p.default]
    if len(defaults) > 1:
        raise ProfileError(
            f"only one profile may be the default, found {', '.join(defaults)}", field="default", slug=defaults[1]
        )
    return ordered


def parse_profiles_yaml(text: str, *, source: str = "profiles YAML") -> list[Profile]:
    """Profiles from the text of a profiles YAML document (a top-level `profiles:` list of dicts), validated."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ProfileError(f"{source}: not valid YAML ({error})") from None
    if not isinstance(document, Mapping) or set(document) != {"profiles"}:
        raise ProfileError(f"{source}: expected a mapping with exactly one key, 'profiles'")
    entries = document["profiles"]
    if not isinstance(entries, list):
        raise ProfileError(f"{source}: 'profiles' must be a list")
    return validate_profiles(Profile.from_dict(entry) for entry in entries)


def load_profiles(path: str | Path) -> list[Profile]:
    """Read a profiles YAML file and return validated profiles by order."""
    with open(path, encoding="utf-8") as stream:
        return parse_profiles_yaml(stream.read(), source=str(path))


def realm_roles(auth_state: Mapping[str, Any] | None) -> list[str]:
    """Keycloak realm roles from a user's auth_state; [] when absent.

    The roles the DESP authenticator recorded (`roles`, which also covers roles read from the access token) win;
    otherwise the userinfo claims OAuthenticator keeps (`oauth_user.realm_access.roles`).
    """
    auth_state = auth_state or {}
    roles = auth_state.get("roles")
    if roles is None:
        user = auth_state.get("oauth_user") or {}
        roles = (user.get("realm_access") or {}).get("roles")
    return [role for role in roles or [] if isinstance(role, str)]


def groups_and_roles(auth_state: Mapping[str, Any] | None, hub_groups: Iterable[str]) -> tuple[list[str], list[str]]:
    """The (groups, realm roles) entitlement is decided on.

    Groups are those the authenticator recorded in auth_state (`groups`), else the user's JupyterHub group names
    (which JupyterHub syncs from the same claim when `Authenticator.manage_groups` is on).
    """
    recorded = (auth_state or {}).get("groups")
    groups = [g for g in recorded if isinstance(g, str)] if recorded else list(hub_groups)
    return groups, realm_roles(auth_state)


def entitled_profiles(profiles: Iterable[Profile], groups: Iterable[str], roles: Iterable[str]) -> list[Profile]:
    """The enabled profiles a user with these groups and roles may start, in the order given."""
    groups, roles = set(groups), set(roles)
    return [p for p in profiles if p.enabled and p.allows(groups, roles)]


def find_entitled(
    profiles: Iterable[Profile], slug: str | None, groups: Iterable[str], roles: Iterable[str]
) -> Profile:
    """The profile `slug` if the user may start it (no slug: the default, else the first entitled one).

    Raises `NotEntitled` with a message for the user when the profile is unknown, disabled or not allowed.
    """
    profiles = list(profiles)
    if not slug:
        entitled = entitled_profiles(profiles, groups, roles)
        if not entitled:
            raise NotEntitled(NOTHING_ENTITLED)
        return next((p for p in entitled if p.default), entitled[0])
    profile = next((p for p in profiles if p.slug == slug), None)
    if profile is None:
        raise NotEntitled(f"There is no server profile called {slug!r}.", slug=slug)
    if not profile.enabled:
        raise NotEntitled(f"The {profile.display_name} profile is currently unavailable.", slug=slug)
    if not profile.allows(set(groups), set(roles)):
        raise NotEntitled(
            f"Your account may not start the {profile.display_name} profile. "
            "Ask the DESP service desk for access, or pick another profile.",
            slug=slug,
        )
    return profile


def profile_environment(profile: Profile) -> dict[str, str]:
    """Environment variables every server started from the profile carries (local or Kubernetes)."""
    return {"DESP_PROFILE": profile.slug, "DESP_DCU_PER_HOUR": repr(profile.dcu_per_hour)}


def local_spawner_settings(profile: Profile) -> dict[str, Any]:
    """What a local process spawner applies for the profile.

    `mem_limit`, `mem_guarantee`, `cpu_limit`, `cpu_guarantee` are JupyterHub Spawner traits (JupyterHub exports
    them as MEM_LIMIT, MEM_GUARANTEE, CPU_LIMIT, CPU_GUARANTEE, read by jupyter-resource-usage); `environment` is
    merged into Spawner.environment; `memory_rlimit` is the byte limit to set as RLIMIT_DATA (soft and hard) on
    the server process.
    """
    return {
        "mem_limit": profile.mem_limit,
        "mem_guarantee": profile.mem_guarantee,
        "cpu_limit": profile.cpu_limit,
        "cpu_guarantee": profile.cpu_guarantee,
        "environment": profile_environment(profile),
        # For RLIMIT_DATA (heap and private writable mappings, Linux >= 4.7) rather than RLIMIT_AS: address-space
        # limits break runtimes that reserve large virtual ranges up front (CUDA, JVM, Go), and Linux ignores
        # RLIMIT_RSS. It is per process, so each kernel gets its own; on Kubernetes the cgroup limit is the fence.
        "memory_rlimit": profile.mem_limit,
    }
