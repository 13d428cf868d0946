"""What a user may ask of the Dask Gateway: limits per Keycloak realm role and per profile, and the cluster options.

A user's limits are those of their most generous Dask role (`stack-dask-low|medium|high`, the Data Lake's model:
the role allowing the most workers), narrowed by the limits of the profiles of their running servers (a small
profile may allow fewer or smaller workers than the role would). Each limit remembers what set it, so a refusal
names it: "at most 2 workers for role stack-dask-low". A user without a Dask role may not create clusters.

The options users see (`Gateway().cluster_options()`) are the worker's cores and memory; the cluster's maximum
number of workers and idle timeout come from the limits, not from the user.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from traitlets import Dict, validate
from traitlets.config import Configurable

GIB = 2**30

#: The limits a role or profile may set, and their types. A profile sets only the ones it narrows.
LIMIT_FIELDS = {
    "max_workers": int,
    "max_worker_cores": int,
    "max_worker_memory_gib": float,
    "idle_timeout": float,
}

DEFAULT_ROLE_LIMITS = {
    "stack-dask-low": {"max_workers": 2, "max_worker_cores": 1, "max_worker_memory_gib": 2, "idle_timeout": 1800},
    "stack-dask-medium": {"max_workers": 4, "max_worker_cores": 2, "max_worker_memory_gib": 4, "idle_timeout": 3600},
    "stack-dask-high": {"max_workers": 8, "max_worker_cores": 4, "max_worker_memory_gib": 8, "idle_timeout": 7200},
}


class NoDaskRole(PermissionError):
    """The user holds none of the roles that allow Dask clusters."""


@dataclasses.dataclass(frozen=True)
class DaskLimits:
    """A user's effective limits; `sources` says, per limit, what set it ("role stack-dask-low", "profile small")."""

    max_workers: int
    max_worker_cores: int
    max_worker_memory_gib: float
    idle_timeout: float
    sources: Mapping[str, str]

    def refusal(self, field: str, asked: Any) -> str:
        """The message refusing `asked` beyond the limit `field`."""
        limit = getattr(self, field)
        what = {
            "max_workers": f"at most {limit} worker{'s' if limit != 1 else ''}",
            "max_worker_cores": f"at most {limit} core{'s' if limit != 1 else ''} per worker",
            "max_worker_memory_gib": f"at most {limit:g} GiB of memory per worker",
        }[field]
        return f"{what} for {self.sources[field]} (asked for {asked})"


def _check_limits(name: str, limits: Any, *, complete: bool) -> dict[str, Any]:
    if not isinstance(limits, Mapping):
        raise ValueError(f"limits of {name!r} must be a mapping of {sorted(LIMIT_FIELDS)}, got {limits!r}")
    unknown = set(limits) - set(LIMIT_FIELDS)
    if unknown:
        raise ValueError(f"limits of {name!r}: unknown {sorted(unknown)} (known: {sorted(LIMIT_FIELDS)})")
    missing = set(LIMIT_FIELDS) - set(limits)
    if complete and missing:
        raise ValueError(f"limits of role {name!r} must set {sorted(missing)} too")
    checked = {}
    for field, value in limits.items():
        kind = LIMIT_FIELDS[field]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise ValueError(f"{field} of {name!r} must be a {'whole ' if kind is int else ''}number, got {value!r}")
        minimum = 0 if field == "idle_timeout" else 1 if kind is int else 0.25
        if value < minimum:
            raise ValueError(f"{field} of {name!r} must be at least {minimum}, got {value!r}")
        checked[field] = kind(value)
    return checked


class DespDaskLimits(Configurable):
    """Limits of Dask clusters per realm role and per profile."""

    role_limits = Dict(
        default_value=DEFAULT_ROLE_LIMITS,
        config=True,
        help="""
        Realm role -> its limits: `max_workers` (workers per cluster), `max_worker_cores`, `max_worker_memory_gib`
        (per worker) and `idle_timeout` (seconds without activity before the cluster is stopped; 0: never). A user
        holding several of these roles gets the one allowing the most workers; a user holding none may not create
        clusters. Default: the Data Lake's stack-dask-low|medium|high.
        """,
    )

    profile_limits = Dict(
        default_value={},
        config=True,
        help="""
        Profile slug -> limits narrowing the role's while the user runs a server of that profile (any subset of
        the role limits' keys; the smaller value wins). With several running servers, every one of their profiles
        narrows. Default: none.
        """,
    )

    @validate("role_limits")
    def _valid_role_limits(self, proposal):
        return {role: _check_limits(role, limits, complete=True) for role, limits in proposal.value.items()}

    @validate("profile_limits")
    def _valid_profile_limits(self, proposal):
        return {slug: _check_limits(slug, limits, complete=False) for slug, limits in proposal.value.items()}

    def dask_role(self, roles: Iterable[str]) -> str | None:
        """The user's most generous Dask role (most workers; ties: the first configured), or None."""
        held = [role for role in self.role_limits if role in set(roles)]
        if not held:
            return None
        return max(held, key=lambda role: (self.role_limits[role]["max_workers"], -held.index(role)))

    def limits_for(self, username: str, roles: Iterable[str], profiles: Iterable[str] = ()) -> DaskLimits:
        """The limits of a user holding `roles` and running servers of `profiles`; NoDaskRole without a Dask role."""
        role = self.dask_role(roles)
        if role is None:
            raise NoDaskRole(
                f"{username} may not create Dask clusters: that takes one of the realm roles "
                f"{', '.join(sorted(self.role_limits))}; ask your DESP administrator"
            )
        values = dict(self.role_limits[role])
        sources = {field: f"role {role}" for field in values}
        for slug in sorted(set(profiles)):
            for field, value in self.profile_limits.get(slug, {}).items():
                # idle_timeout 0 means "never": any positive timeout is narrower
                narrower = (value < values[field] or values[field] == 0) if field == "idle_timeout" else (
                    value < values[field]
                )
                if narrower and not (field == "idle_timeout" and value == 0):
                    values[field], sources[field] = value, f"profile {slug}"
        return DaskLimits(sources=sources, **values)
