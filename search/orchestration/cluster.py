"""The Ray cluster a sweep runs on: connecting to it (an absent cluster reported in seconds, not minutes), and what it
must offer before any trial starts (the capacity of the largest trial, storage every node can reach)."""

from __future__ import annotations

import logging
import os

import ray

from peftsweep.environment import actor_env, apply_defaults
from peftsweep.errors import UserError
from peftsweep.search import storage
from peftsweep.search.orchestration.ray_private import quiet_worker_pool_note
from peftsweep.search.plan import SweepPlan, capacity_problems, needs

log = logging.getLogger(__name__)

RAY_REACH_TIMEOUT_S = 5.0


def connect_ray(address: str | None = None) -> None:
    if ray.is_initialized():
        return
    apply_defaults()
    address = address or os.environ.get("RAY_ADDRESS")
    if (problem := unreachable_ray(address)) is not None:
        raise UserError(problem, "no Ray cluster")
    quiet_worker_pool_note()
    env = actor_env()  # on a cluster Ray's actors run in processes this one did not start
    # Worker logs stay in Ray's session directory; the progress printer says what matters.
    ray.init(address=address, include_dashboard=False, log_to_driver=False,
             configure_logging=False, runtime_env={"env_vars": env} if env else None)


def unreachable_ray(address: str | None) -> str | None:
    """Why no Ray cluster can answer at `address` (host:port or ray://host:port), tried with one short connection:
    `ray.init` itself waits for an absent cluster's GCS for minutes (measured: still waiting after 5 min)."""
    import socket

    if not address or address in ("auto", "local"):
        return None
    host, _, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        return None  # a form this check does not know: Ray reads it
    try:
        socket.create_connection((host, int(port)), timeout=RAY_REACH_TIMEOUT_S).close()
        return None
    except OSError as exc:
        return (f"Ray: nothing answers at {address} ({exc.strerror or type(exc).__name__}, tried for "
                f"{RAY_REACH_TIMEOUT_S:g} s): start the cluster (`ray start --head`), or check --address / "
                f"RAY_ADDRESS")


def cluster_has_gpus() -> bool:
    return ray.cluster_resources().get("GPU", 0) > 0


def check_capacity(plan: SweepPlan) -> None:
    """The preflight's capacity check against the cluster Ray connected to (a trial asking for more than the whole
    cluster has would wait forever)."""
    available = ray.cluster_resources()
    if problems := capacity_problems(needs(plan.config, plan.methods, available), available):
        raise UserError(problems, "the sweep does not fit the Ray cluster")


def check_storage(location: str) -> None:
    """Checkpoints written on one machine's local disk are invisible to the others: say so before anything runs."""
    hosts = {node["NodeManagerAddress"] for node in ray.nodes() if node.get("Alive")}
    if len(hosts) > 1 and not storage.is_uri(location):
        log.info(f"note: storage {location} is a local path and the Ray cluster spans {len(hosts)} machines: every "
                 f"node must mount it at this same path (NFS), or set storage: to an object store URI (s3://...)")
