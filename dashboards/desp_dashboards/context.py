"""Who is looking at a dashboard, and where the platform is: one value per Panel session.

The dashboards service (``desp_dashboards.service``) builds a :class:`DashboardContext` for every
authenticated browser session from the hub's user model and the service's environment, and passes it
to the apps' ``create_app(context)``. Apps and data stores read everything they need from it and
never from the environment, so they can be built in tests with a hand-made context and no server.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

#: The hub group whose members see restricted panels, unless configured otherwise (ESA/EC).
DEFAULT_RESTRICTED_GROUP = "executives"


@dataclasses.dataclass(frozen=True)
class DashboardContext:
    """The viewer of one dashboard session and the endpoints the dashboards read from.

    ``user_token`` is a callable rather than a string so that a long session always gets the
    user's current DESP access token (the hub refreshes it) and so the token never shows in a
    ``repr`` or a log line.
    """

    user: str | None
    """Hub user name; ``None`` for an anonymous (public) page."""

    groups: frozenset[str]
    """The user's hub groups."""

    restricted_group: str = DEFAULT_RESTRICTED_GROUP
    """Members of this hub group see restricted panels and user names."""

    hub_api_url: str = ""
    """The hub's REST API, e.g. ``http://127.0.0.1:8081/hub/api``."""

    hub_api_token: str = dataclasses.field(default="", repr=False)
    """The dashboards *service's* token (read users, groups, servers), for the executive sources."""

    user_token: Callable[[], str] | None = dataclasses.field(default=None, repr=False)
    """Returns the user's own DESP access token (catalogue, cache, accounting); ``None`` if unknown."""

    catalogue_url: str = ""
    """The platform's STAC API."""

    cache_url: str = ""
    """The platform's data cache."""

    accounting_url: str = ""
    """The platform's accounting (DCU ledger) API."""

    public_url: str = ""
    """How the dashboards are reached, e.g. ``http://127.0.0.1:8000/services/dashboards``."""

    statistics_token: Callable[[], str] | None = dataclasses.field(default=None, repr=False)
    """Returns a token of the dashboards service's statistics account (realm role ``executive-statistics``), which
    reads platform-wide usage for the public aggregates; ``None`` when the service has none (then only viewers
    holding that role themselves see DCU figures)."""

    def __post_init__(self) -> None:
        # Accept any iterable of group names, keep the frozen promise.
        object.__setattr__(self, "groups", frozenset(self.groups))

    @property
    def may_see_restricted(self) -> bool:
        """True when the viewer is a logged-in member of the restricted group."""
        return self.user is not None and self.restricted_group in self.groups
