"""Dependency checks behind gRPC health: a server answers NOT_SERVING while Kafka or S3 is unreachable.

`serve(..., dependencies=...)` (movakit.runtime.grpc_server) runs `watch_dependencies` in a daemon thread: every
`interval_s` it calls each check and sets every health service name of the server to SERVING when all pass,
NOT_SERVING (with a log line naming the failing dependency) while one fails; the thread ends with the server.
A check is "reachable": a TCP connection to the dependency's address opens within `timeout_s`.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Mapping, Sequence

import grpc
from grpc_health.v1 import health, health_pb2

log = logging.getLogger("movakit.health")

CHECK_INTERVAL_S = 1.0  # how often a server re-checks its dependencies
CHECK_TIMEOUT_S = 1.0  # how long one connection attempt may take


def reachable(address: str, timeout_s: float = CHECK_TIMEOUT_S) -> bool:
    """True when a TCP connection to host:port opens within timeout_s."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def kafka_check(bootstrap: str) -> Callable[[], bool]:
    """Passes while any of the bootstrap servers (host:port[,host:port]) accepts connections."""
    servers = [s.strip() for s in bootstrap.split(",") if s.strip()]
    return lambda: any(reachable(server) for server in servers)


def s3_check(endpoint: str) -> Callable[[], bool]:
    """Passes while the S3 endpoint (host:port) accepts connections."""
    return lambda: reachable(endpoint)


def stack_dependencies(kafka_bootstrap: str, s3_endpoint: str) -> dict[str, Callable[[], bool]]:
    """The checks of every MOVA service: its Kafka bootstrap servers and its S3 endpoint."""
    return {"kafka": kafka_check(kafka_bootstrap), "s3": s3_check(s3_endpoint)}


def watch_dependencies(server: grpc.Server, servicer: health.HealthServicer, names: Sequence[str],
                       checks: Mapping[str, Callable[[], bool]], interval_s: float = CHECK_INTERVAL_S) -> None:
    """Keeps the health of `names` in step with `checks` until the server has terminated."""
    failing: frozenset[str] = frozenset()
    while server.wait_for_termination(timeout=interval_s):  # True: timed out, the server still runs
        now = frozenset(name for name, check in checks.items() if not check())
        if now != failing:
            log.warning("dependencies changed", extra={"fields": {"unreachable": sorted(now),
                                                                  "serving": not now}})
            failing = now
        status = health_pb2.HealthCheckResponse.NOT_SERVING if now else health_pb2.HealthCheckResponse.SERVING
        for name in names:
            servicer.set(name, status)
