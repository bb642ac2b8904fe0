"""The gRPC server every service runs: its servicers plus standard health and reflection, traced, stopping
gracefully on SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from movakit.runtime.telemetry import grpc_server_interceptors

log = logging.getLogger("movakit.grpc")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # room for a 16 MiB input image plus the rest of a request


class BindError(OSError):
    """The server could not listen on the requested address."""


def serve(
    service_name: str,
    add_servicers: Callable[[grpc.Server], list[str]],
    address: str = "127.0.0.1:50051",
    *,
    max_workers: int = 16,
    grace_s: float = 5.0,
    handle_signals: bool = True,
) -> grpc.Server:
    """Starts a server on `address` and returns it (already serving; call `wait_for_termination()`).

    `add_servicers(server)` registers the service's servicers and returns their full service names
    (e.g. ["movakit.api.v1.JobService"]); each is marked SERVING in the health service (as is "") and listed by
    reflection. With handle_signals (only possible from the main thread) SIGTERM/SIGINT mark everything
    NOT_SERVING and stop the server with `grace_s` seconds for in-flight calls.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"{service_name}-rpc"),
        interceptors=grpc_server_interceptors(),
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    names = list(add_servicers(server))
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise BindError(f"{service_name}: cannot listen on {address}: {exc}") from exc
    if port == 0:
        raise BindError(f"{service_name}: cannot listen on {address}")
    server.start()
    for name in ["", *names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("grpc serving", extra={"fields": {"service": service_name, "address": address, "services": names}})

    if handle_signals and threading.current_thread() is threading.main_thread():

        def _stop(signum, _frame):
            log.info("grpc stopping", extra={"fields": {"service": service_name, "signal": signum}})
            health_servicer.enter_graceful_shutdown()
            server.stop(grace_s)

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    return server


def check_health(address: str, service: str = "", *, timeout_s: float = 2.0) -> bool:
    """True when the server at `address` answers SERVING for `service` ("" = the whole server)."""
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError:
            return False
    return response.status == health_pb2.HealthCheckResponse.SERVING
