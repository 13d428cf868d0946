"""Profile-aware local spawners: the profile form, the server-side entitlement check, local resources.

Two spawners share the profile logic:

- `DespLocalSpawner`: every user's server runs under the hub's own OS account (one machine, trusted
  users, development). It does not isolate users from each other.
- `DespSystemUserSpawner`: every user's server runs under its own system account, created on first
  spawn. Users are isolated from each other by the operating system.

On Kubernetes the same profiles become KubeSpawner profiles (`desp_hub.kube`), spawned by
`desp_hub.kube_config.DespKubeSpawner`. Both kinds of spawner meter their servers the same way through
`DespMeteringMixin`: the DCU balance checked before the server starts, the profile and its price recorded in
`user_options` (what the metering service, the culler and the Dask Gateway read), the metering session opened
after the start and closed, with its final partial interval, after the stop.
"""

import asyncio
import datetime
import functools
import html
import os
import pwd
import re
import resource
import stat
import subprocess
import sys

from jupyterhub.spawner import LocalProcessSpawner, SimpleLocalProcessSpawner
from jupyterhub.utils import maybe_future
from sqlalchemy.exc import SQLAlchemyError
from tornado import web
from traitlets import Bool, Unicode, default
from traitlets.config import LoggingConfigurable

from .culls import cull_notice, last_cull
from .metering import ClientCredentials, DespMetering, amount_milli, format_dcu, session_id, spawn_refusal
from .platform_endpoints import DespPlatformEndpoints
from .profile_store import seeded_store
from .profiles import (
    NotEntitled,
    entitled_profiles,
    find_entitled,
    groups_and_roles,
    load_profiles,
    local_spawner_settings,
)


@functools.cache
def _cached_token_source(token_url, client_id, client_secret):
    return ClientCredentials(token_url, client_id, client_secret)


def _token_source(metering):
    """One cached client-credentials token per hub process (not one token request per spawn)."""
    return _cached_token_source(metering.token_url, metering.client_id, metering.client_secret)


def host_has_gpu() -> bool:
    """True when an NVIDIA device node is present on this host."""
    return os.path.exists("/dev/nvidia0")


class DespMeteringMixin(LoggingConfigurable):
    """What metering needs of any DESP spawner, local or Kubernetes, so that both meter servers alike.

    The spawner finds the server's DESP profile (`entitled_profile`) and, before the server is created, calls
    `check_dcu_balance` (402 when the balance cannot cover the first interval; 503 or start, per
    `DespMetering.when_accounting_down`, when it cannot be asked) and `record_profile` (the profile's slug and price
    go into `user_options`, which the metering service, the culler and the Dask Gateway read through the hub API).
    This mixin then opens the metering session after the start (`start`), gives the server its `DESP_SESSION_ID`
    (`get_env`) and queues the session's last intervals after every stop (`run_post_stop_hook`).
    """

    #: The DESP profile the server was started with (set by `record_profile`); None before, or without profiles.
    metered_profile = None

    @property
    def metering(self) -> DespMetering:
        """The metering configuration (`c.DespMetering`), read once per spawner."""
        if getattr(self, "_desp_metering", None) is None:
            self._desp_metering = DespMetering(parent=self)
        return self._desp_metering

    async def user_groups_and_roles(self):
        """The spawning user's groups and realm roles, as recorded at the last login or refresh."""
        auth_state = await self.user.get_auth_state()
        return groups_and_roles(auth_state, [group.name for group in self.user.groups])

    async def entitled_profile(self, profiles, slug):
        """The profile `slug` (none: the user's default) among `profiles`, re-checked on the server side (403)."""
        groups, roles = await self.user_groups_and_roles()
        try:
            return find_entitled(profiles, slug, groups, roles)
        except NotEntitled as error:
            self.log.warning("Refused spawn of profile %r for %s: %s", slug, self.user.name, error)
            raise web.HTTPError(403, str(error)) from None

    def record_profile(self, profile):
        """Put the profile's slug (and its price, when metering is on) in the server's `user_options`.

        The hub persists them and its REST API shows them with `read:servers`: the metering service reads the price
        the server was started at, the culler and the Dask Gateway the profile (also when it was the default one,
        chosen because the spawn request named none).
        """
        options = {**(self.user_options or {}), "profile": profile.slug}
        if self.metering.enabled:
            options["dcu_per_hour"] = profile.dcu_per_hour
        self.user_options = options
        if self.orm_spawner is not None:
            self.orm_spawner.user_options = dict(options)
        self.metered_profile = profile

    async def check_dcu_balance(self, profile):
        """Refuse the spawn (402) when the user's available DCUs cannot cover the profile's first interval.

        When the accounting service cannot be asked, `DespMetering.when_accounting_down` decides (503 or start),
        with a log line either way. Nothing is checked when metering is off or the profile is free.
        """
        metering = self.metering
        if not metering.enabled:
            return
        first = amount_milli(profile.dcu_per_hour, metering.interval_seconds)
        if first == 0:
            return
        try:
            # A person waits for this answer: one quick retry at most, then the policy decides.
            accounting = metering.accounting(token=_token_source(metering), timeout=5, retries=1, backoff=0.2)
            account = await asyncio.to_thread(accounting.account, self.user.name)
            available = account["available"]
            refusal = spawn_refusal(
                available=available,
                mode=account.get("mode", "advance"),
                profile_name=profile.display_name,
                dcu_per_hour=profile.dcu_per_hour,
                interval_seconds=metering.interval_seconds,
            )
        except Exception as error:  # unreachable, refused token, garbled answer: the balance is unknown
            reason = f"{type(error).__name__}: {error}"
            if metering.when_accounting_down == "allow":
                self.log.warning(
                    "Cannot check the DCU balance of %s (%s); starting %s anyway (when_accounting_down=allow)",
                    self.user.name, reason, profile.slug,
                )
                return
            self.log.error(
                "Cannot check the DCU balance of %s (%s); refusing to start %s (when_accounting_down=refuse)",
                self.user.name, reason, profile.slug,
            )
            raise web.HTTPError(
                503,
                "Your DCU balance cannot be checked right now (the accounting service is not available), so the "
                "server was not started. Try again in a few minutes.",
            ) from None
        if refusal:
            self.log.warning(
                "Refused spawn of %s for %s: %s DCU available, first interval costs %s DCU",
                profile.slug, self.user.name, available, format_dcu(first),
            )
            raise web.HTTPError(402, refusal)
        self.log.info("%s has %s DCU available; %s costs %s DCU per interval", self.user.name, available,
                      profile.slug, format_dcu(first))

    def session_id(self):
        """This server's metering session (`DESP_SESSION_ID`), or "" when it has not been started."""
        started = self.orm_spawner.started if self.orm_spawner is not None else None
        return session_id(self.user.name, self.name, started) if started else ""

    def get_env(self):
        """The server's environment, plus its metering session (`DESP_SESSION_ID`) once the hub started it."""
        env = super().get_env()
        session = self.session_id()
        if session:
            env["DESP_SESSION_ID"] = session
        return env

    async def start(self):
        """Start the server (the spawner's own start), then open its metering session."""
        url = await maybe_future(super().start())
        await self.open_metering_session()
        return url

    async def open_metering_session(self):
        """Record the started server's session with its profile's price (the metering service meters it)."""
        metering = self.metering
        started = self.orm_spawner.started
        profile = self.metered_profile
        if not metering.enabled or started is None or profile is None:
            return
        try:
            await asyncio.to_thread(
                metering.outbox().open_session,
                self.user.name, self.name, started, profile.slug, profile.dcu_per_hour, metering.interval_seconds,
            )
        except Exception as error:  # the service records the session at first sight anyway
            self.log.error("Could not record the metering session of %s: %s", self._log_name, error)

    async def run_post_stop_hook(self):
        """After every stop (asked for, culled, or found dead), queue the session's last intervals, then the hook."""
        await self.close_metering_sessions()
        return await maybe_future(super().run_post_stop_hook())

    async def close_metering_sessions(self):
        """Queue the missing complete intervals and the final partial one of this server's open sessions.

        The hub has already forgotten `started` when its stop hook runs, so the open sessions are found in the
        outbox by user and server name; the stop time is read when they are closed.
        """
        metering = self.metering
        if not metering.enabled:
            return
        try:
            closed = await asyncio.to_thread(metering.outbox().close_sessions, self.user.name, self.name)
        except Exception as error:
            self.log.error("Could not queue the final metering interval of %s: %s", self._log_name, error)
            return
        for session in closed:
            self.log.info("Metering session %s stopped at %s", session.session, session.stopped_at.isoformat())


class DespProfilesMixin(DespMeteringMixin):
    """Profile form, entitlement re-check at spawn, and local application of a profile's resources."""

    profiles_url = Unicode(
        config=True,
        help="""
        SQLAlchemy URL of the profile store (`desp_hub.profile_store`) that admins edit live through the profiles
        service. It is read at every spawn, so a changed profile applies at the next server start, with no hub
        restart. When empty, profiles come from the YAML file `profiles_path` alone.
        """,
    )

    profiles_path = Unicode(
        config=True,
        help="""
        YAML file with the profiles (Standard, Power, AI, ...). With `profiles_url` it only seeds an empty store;
        without, it is the profiles, read at every spawn. Defaults to the seed shipped with desp_hub.
        """,
    )

    @default("profiles_path")
    def _profiles_path_default(self):
        return os.path.join(os.path.dirname(__file__), "profiles.yaml")

    allow_gpu_profiles_without_gpu = Bool(
        False,
        config=True,
        help="""
        Development override: start profiles that ask for GPUs on a host without one (the server simply gets no
        GPU). Without it such a spawn is refused with a clear message.
        """,
    )

    async def load_profiles(self):
        """All configured profiles, read now (from the store in a worker thread: it blocks on the database)."""
        if not self.profiles_url:
            return load_profiles(self.profiles_path)
        store = await asyncio.to_thread(seeded_store, self.profiles_url, self.profiles_path)
        return await asyncio.to_thread(store.profiles)

    async def _options_form_for_user(self, spawner):
        groups, roles = await self.user_groups_and_roles()
        profiles = entitled_profiles(await self.load_profiles(), groups, roles)
        if not profiles:
            return (
                '<p class="alert alert-warning">No profile is available to your account. '
                "Ask your DESP administrator for access.</p>"
            )
        return await self._cull_notice_html() + render_profile_form(profiles)

    async def _cull_notice_html(self):
        """Why the last server stopped, when the culler stopped it and it has not been started since.

        The hub sets the spawner's last_activity when a stop completes; the culler records the cull just before
        it asks for the stop, so a cull up to a minute before that moment is this stop's reason.
        """
        stopped_at = self.orm_spawner.last_activity
        if not self.profiles_url or stopped_at is None:
            return ""
        since = stopped_at - datetime.timedelta(minutes=1)
        try:
            cull = await asyncio.to_thread(last_cull, self.profiles_url, self.user.name, since, self.name)
        except SQLAlchemyError as error:
            self.log.warning("Cannot read the cull record of %s: %s", self.user.name, error)
            return ""
        return f'<p class="alert alert-info desp-cull-notice">{cull_notice(cull)}</p>' if cull else ""

    @default("options_form")
    def _options_form_default(self):
        return self._options_form_for_user

    def options_from_form(self, form_data):
        """The form posts one field, `profile`; anything else is logged and dropped."""
        unknown = sorted(set(form_data) - {"profile", "_xsrf"})
        if unknown:
            self.log.warning("Ignoring unknown spawn form fields for %s: %s", self.user.name, unknown)
        return {"profile": (form_data.get("profile") or [""])[0]}

    @default("apply_user_options")
    def _apply_user_options_default(self):
        return DespProfilesMixin.apply_profile

    async def apply_profile(self, user_options):
        """Re-check entitlement on the server side, check the DCU balance, apply the chosen profile.

        Refused with 403 (not entitled), 409 (needs a GPU this host lacks), 402 (the balance cannot cover the first
        metered interval) or 503 (the balance cannot be checked and `when_accounting_down` is `refuse`).
        """
        profile = await self.entitled_profile(await self.load_profiles(), (user_options or {}).get("profile"))
        if profile.gpus and not host_has_gpu() and not self.allow_gpu_profiles_without_gpu:
            raise web.HTTPError(
                409,
                f"The {profile.display_name} profile needs a GPU and this host has none. "
                "Choose another profile.",
            )
        await self.check_dcu_balance(profile)
        self.record_profile(profile)
        settings = local_spawner_settings(profile)
        for trait in ("mem_limit", "mem_guarantee", "cpu_limit", "cpu_guarantee"):
            setattr(self, trait, settings[trait])
        self.environment.update(settings["environment"])
        self.memory_rlimit = settings["memory_rlimit"]
        self.log.info("Starting %s's server with profile %s", self.user.name, profile.slug)

    def get_env(self):
        """The server's environment (with its metering session), plus where the platform's services are."""
        env = super().get_env()
        env.update(DespPlatformEndpoints(parent=self).environment(self.user.name))
        return env

    def prepare_user_cache(self):
        """Create the user's cache area when it is a local directory; returns its path or ""."""
        directory = DespPlatformEndpoints(parent=self).local_cache_directory(self.user.name)
        if directory:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        return directory

    async def start(self):
        self.prepare_user_cache()
        return await super().start()

    def _limit_memory(self, preexec):
        """Wrap a preexec function so the server (and its kernels) cannot grow past the profile's memory."""
        limit = getattr(self, "memory_rlimit", None)

        def limited_preexec():
            if limit:
                resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
            preexec()

        return limited_preexec


class DespLocalSpawner(DespProfilesMixin, SimpleLocalProcessSpawner):
    """All users' servers under the hub's OS account, each with its own home under `home_dir_template`.

    Shares the OS account, so it does not isolate users from each other.
    """

    def make_preexec_fn(self, name):
        return self._limit_memory(super().make_preexec_fn(name))


SYSTEM_USERNAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


class DespSystemUserSpawner(DespProfilesMixin, LocalProcessSpawner):
    """Each user's server under its own system account, created on first spawn (`useradd`).

    The operating system isolates users from each other: their files and processes are their own.
    The hub must run as root.
    """

    create_system_users = Bool(
        True, config=True, help="Create the system account (`useradd --create-home`) on first spawn."
    )

    useradd_command = Unicode(
        "useradd --create-home --shell /bin/bash --user-group",
        config=True,
        help="Command (split on spaces) that creates a system account; the username is appended.",
    )

    def ensure_system_user(self):
        name = self.user.name
        if not SYSTEM_USERNAME.match(name):
            raise web.HTTPError(
                400, f"The username {name!r} cannot be a system account; ask an administrator."
            )
        try:
            pwd.getpwnam(name)
            return
        except KeyError:
            pass
        if not self.create_system_users:
            raise web.HTTPError(409, f"There is no system account for {name}; ask an administrator.")
        self.log.info("Creating system account %s", name)
        subprocess.run(self.useradd_command.split() + [name], check=True, capture_output=True)

    def ensure_server_reachable(self):
        """Refuse with a clear message when other accounts cannot run the server's command at all."""
        for path in (self.cmd[0], sys.executable):
            blocked = path_not_reachable_by_others(path)
            if blocked:
                self.log.error("%s is not reachable by other accounts (%s is not world-searchable)", path, blocked)
                raise web.HTTPError(
                    500,
                    "Servers cannot run under their own accounts on this host: the Jupyter installation is not "
                    "readable by other users. Ask an administrator.",
                )

    async def start(self):
        self.ensure_system_user()
        self.ensure_server_reachable()
        return await super().start()

    def prepare_user_cache(self):
        """The local cache area belongs to the user's own account."""
        directory = super().prepare_user_cache()
        if directory:
            account = pwd.getpwnam(self.user.name)
            os.chown(directory, account.pw_uid, account.pw_gid)
        return directory

    def make_preexec_fn(self, name):
        return self._limit_memory(super().make_preexec_fn(name))


def path_not_reachable_by_others(path):
    """The first directory on the way to `path` (symlinks followed) that other accounts cannot enter, or ""."""
    real = os.path.realpath(path)
    directory = os.path.dirname(real)
    while True:
        if not os.stat(directory).st_mode & stat.S_IXOTH:
            return directory
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return "" if os.stat(real).st_mode & stat.S_IROTH else real


def render_profile_form(profiles):
    """HTML radio cards, one per profile the user may use (the default one checked)."""
    checked_slug = next((p.slug for p in profiles if p.default), profiles[0].slug)
    cards = []
    for profile in profiles:
        gpu = f", {profile.gpus} GPU" + (f" ({html.escape(profile.gpu_type)})" if profile.gpu_type else "") if profile.gpus else ""
        checked = " checked" if profile.slug == checked_slug else ""
        cards.append(
            f"""
  <label class="desp-profile list-group-item" for="profile-{html.escape(profile.slug)}">
    <input type="radio" name="profile" id="profile-{html.escape(profile.slug)}" value="{html.escape(profile.slug)}"{checked}>
    <strong>{html.escape(profile.display_name)}</strong>
    <span class="desp-profile-resources">up to {profile.cpu_limit:g} CPU, {_gib(profile.mem_limit)} memory{gpu}
      &middot; {profile.dcu_per_hour:g} DCU/hour</span>
    <div class="desp-profile-description">{html.escape(profile.description)}</div>
  </label>"""
        )
    return '<div class="list-group desp-profiles">' + "".join(cards) + "\n</div>"


def _gib(size_bytes):
    return f"{size_bytes / 2**30:g} GiB"
