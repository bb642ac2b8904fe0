"""The gRPC server every service runs: its servicers plus standard health and reflection, traced, error statuses
counted (mova_grpc_errors_total), stopping gracefully on SIGTERM/SIGINT. A request body that does not decode as the
method's message (random bytes, invalid UTF-8 in a string field) is answered INVALID_ARGUMENT on every server, never
INTERNAL."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Mapping
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from movakit.runtime.health import watch_dependencies
from movakit.runtime.metrics import GrpcErrorCounter
from movakit.runtime.telemetry import grpc_server_interceptors

log = logging.getLogger("movakit.grpc")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # room for a 16 MiB input image plus the rest of a request


class BindError(OSError):
    """The server could not listen on the requested address."""


class _Malformed:
    """Stands in for a request whose bytes did not decode; the method is then never called."""


def _tolerant(deserializer: Callable[[bytes], object]) -> Callable[[bytes], object]:
    def deserialize(data: bytes) -> object:
        try:
            return deserializer(data)
        except Exception:  # noqa: BLE001 - any decoding failure is the client's bytes, not a server fault
            return _Malformed()
    return deserialize


class MalformedRequestInterceptor(grpc.ServerInterceptor):
    """Turns grpcio's INTERNAL "Exception deserializing request!" into INVALID_ARGUMENT naming the method.

    Unary-request methods only (every movakit RPC takes one request message); streaming-request handlers pass
    through unchanged."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        method = handler_call_details.method
        behavior_name = "unary_stream" if handler.response_streaming else "unary_unary"
        behavior = getattr(handler, behavior_name)

        def guarded(request, context):
            if isinstance(request, _Malformed):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"request: the body is not a valid message for {method}")
            return behavior(request, context)

        return handler._replace(request_deserializer=_tolerant(handler.request_deserializer), **{behavior_name: guarded})


def serve(
    service_name: str,
    add_servicers: Callable[[grpc.Server], list[str]],
    address: str = "127.0.0.1:50051",
    *,
    max_workers: int = 16,
    grace_s: float = 5.0,
    handle_signals: bool = True,
    credentials: grpc.ServerCredentials | None = None,
    dependencies: Mapping[str, Callable[[], bool]] | None = None,
) -> grpc.Server:
    """Starts a server on `address` and returns it (already serving; call `wait_for_termination()`).

    `add_servicers(server)` registers the service's servicers and returns their full service names
    (e.g. ["movakit.api.v1.JobService"]); each is marked SERVING in the health service (as is "") and listed by
    reflection. `credentials` (e.g. from tls_credentials) serve TLS instead of plaintext. With handle_signals (only
    possible from the main thread) SIGTERM/SIGINT mark everything NOT_SERVING and stop the server with `grace_s`
    seconds for in-flight calls. With `dependencies` (name -> check, movakit.runtime.health) health answers
    NOT_SERVING while a check fails and SERVING again after.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"{service_name}-rpc"),
        interceptors=[*grpc_server_interceptors(), GrpcErrorCounter(), MalformedRequestInterceptor()],
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
        port = server.add_insecure_port(address) if credentials is None else server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise BindError(f"{service_name}: cannot listen on {address}: {exc}") from exc
    if port == 0:
        raise BindError(f"{service_name}: cannot listen on {address}")
    server.start()
    for name in ["", *names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if dependencies:
        threading.Thread(target=watch_dependencies, args=(server, health_servicer, ["", *names], dependencies),
                         name=f"{service_name}-health", daemon=True).start()
    log.info("grpc serving", extra={"fields": {"service": service_name, "address": address, "services": names}})

    if handle_signals and threading.current_thread() is threading.main_thread():

        def _stop(signum, _frame):
            log.info("grpc stopping", extra={"fields": {"service": service_name, "signal": signum}})
            health_servicer.enter_graceful_shutdown()
            server.stop(grace_s)

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    return server


def tls_credentials(cert_file: str, key_file: str, client_ca_file: str = "") -> grpc.ServerCredentials:
    """TLS with the server's certificate chain and key (PEM files); with client_ca_file, mutual TLS: every client
    must present a certificate signed by that CA."""
    def read(path: str) -> bytes:
        with open(path, "rb") as handle:
            return handle.read()

    return grpc.ssl_server_credentials(
        [(read(key_file), read(cert_file))], root_certificates=read(client_ca_file) if client_ca_file else None,
        require_client_auth=bool(client_ca_file),
    )


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
