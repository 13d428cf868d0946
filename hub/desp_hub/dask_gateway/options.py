"""The cluster options users see and the per-cluster configuration they turn into.

`cluster_options(limits)` is what `c.Backend.cluster_options` returns for one user (see `gateway_config`): the
worker's cores and memory, checked against the user's limits with a refusal naming the limit, and turned into the
cluster's configuration (`DespClusterConfig`), which also carries the limits the user does not choose: the maximum
number of workers (and what set it, for the refusal of a scale request beyond it) and the idle timeout.
"""

from __future__ import annotations

from dask_gateway_server.backends.local import LocalClusterConfig
from dask_gateway_server.options import Float, Integer, Options
from traitlets import Float as FloatTrait
from traitlets import Integer as IntegerTrait
from traitlets import Unicode
from traitlets.config import Configurable

from .limits import GIB, DaskLimits

DEFAULT_WORKER_MEMORY_GIB = 2.0


class DespClusterConfigMixin(Configurable):
    """What DESP adds to a cluster's configuration, recorded with the cluster when it is created (so later changes
    of the settings apply to new clusters only)."""

    max_workers_source = Unicode(
        "",
        config=True,
        help="What set `cluster_max_workers` (e.g. 'role stack-dask-low'): named when a user asks for more workers.",
    )

    dcu_per_core_hour = FloatTrait(
        1.0,
        min=0.0,
        config=True,
        help="""
        DCUs debited per hour of one worker core: a worker of `worker_cores` cores running for `h` hours costs
        `dcu_per_core_hour * worker_cores * h` DCU (desp_hub.dask_gateway.metering). 0: Dask is free.
        """,
    )


    metering_interval_seconds = IntegerTrait(
        300,
        min=1,
        config=True,
        help="""
        Length of a metering interval of the cluster's workers in seconds (the hub's DespMetering.interval_seconds):
        each complete interval of a worker is one debit, plus its partial last interval at its stop.
        """,
    )


class DespClusterConfig(DespClusterConfigMixin, LocalClusterConfig):
    """A cluster's configuration on the local backend (processes on this machine)."""


def cluster_options(limits: DaskLimits) -> Options:
    """The options of a user with `limits`: worker cores and memory, refused beyond the limits with their source."""

    def to_configuration(options, _user):
        if options.worker_cores > limits.max_worker_cores:
            raise ValueError(limits.refusal("max_worker_cores", options.worker_cores))
        if options.worker_memory > limits.max_worker_memory_gib:
            raise ValueError(limits.refusal("max_worker_memory_gib", f"{options.worker_memory:g} GiB"))
        return {
            "worker_cores": options.worker_cores,
            "worker_memory": int(options.worker_memory * GIB),
            "cluster_max_workers": limits.max_workers,
            "max_workers_source": limits.sources["max_workers"],
            "idle_timeout": limits.idle_timeout,
        }

    return Options(
        Integer("worker_cores", default=1, min=1, label=f"Worker cores (at most {limits.max_worker_cores})"),
        Float(
            "worker_memory",
            default=min(DEFAULT_WORKER_MEMORY_GIB, limits.max_worker_memory_gib),
            min=0.25,
            label=f"Worker memory in GiB (at most {limits.max_worker_memory_gib:g})",
        ),
        handler=to_configuration,
    )
