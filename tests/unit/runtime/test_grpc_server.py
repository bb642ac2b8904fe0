"""serve(): health for every registered service, reflection, refusal of a busy address."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from movakit.api.v1 import gateway_pb2, gateway_pb2_grpc
from movakit.runtime.grpc_server import BindError, check_health, serve
from movakit.runtime.localstack import free_port


class Unimplemented(gateway_pb2_grpc.JobServiceServicer):
    pass


def add(server: grpc.Server) -> list[str]:
    gateway_pb2_grpc.add_JobServiceServicer_to_server(Unimplemented(), server)
    return ["movakit.api.v1.JobService"]


def test_health_reflection_and_a_busy_port():
    address = f"127.0.0.1:{free_port()}"
    server = serve("test", add, address, handle_signals=False)
    try:
        assert check_health(address) and check_health(address, "movakit.api.v1.JobService")
        assert not check_health(address, "movakit.api.v1.Nope")
        with grpc.insecure_channel(address) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="movakit.api.v1.JobService")
            answer = next(stub.ServerReflectionInfo(iter([request])))
            assert answer.file_descriptor_response.file_descriptor_proto  # clients can discover the API
            with pytest.raises(grpc.RpcError) as err:
                gateway_pb2_grpc.JobServiceStub(channel).Get(gateway_pb2.GetJobRequest(job_id="x"), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(BindError, match=address):
            serve("second", add, address, handle_signals=False)
    finally:
        server.stop(0).wait()
    assert not check_health(address, timeout_s=0.5)


class Echo(gateway_pb2_grpc.JobServiceServicer):
    def Get(self, request, context):
        from movakit.api.v1 import common_pb2

        return common_pb2.Job(job_id=request.job_id)


def test_a_body_that_is_not_the_message_gets_invalid_argument():
    address = f"127.0.0.1:{free_port()}"

    def add_echo(server: grpc.Server) -> list[str]:
        gateway_pb2_grpc.add_JobServiceServicer_to_server(Echo(), server)
        return ["movakit.api.v1.JobService"]

    server = serve("test", add_echo, address, handle_signals=False)
    try:
        with grpc.insecure_channel(address) as channel:
            raw = channel.unary_unary("/movakit.api.v1.JobService/Get")  # bytes in, bytes out
            # field 1 (job_id) as a length-delimited string holding invalid UTF-8; then bytes that are no message
            for body in (b"\x0a\x02\xff\xfe", b"\xff\xff\xff\xff\xff", b"\x0a\x7f"):
                with pytest.raises(grpc.RpcError) as err:
                    raw(body, timeout=5)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, body
                assert "/movakit.api.v1.JobService/Get" in err.value.details()
            assert raw(gateway_pb2.GetJobRequest(job_id="ok").SerializeToString(), timeout=5)  # valid ones still work
    finally:
        server.stop(0).wait()


def test_health_follows_the_dependency_checks():
    address = f"127.0.0.1:{free_port()}"
    kafka_up = threading.Event()
    kafka_up.set()
    server = serve("test", add, address, handle_signals=False, dependencies={"kafka": kafka_up.is_set})
    try:
        kafka_up.clear()
        _until(lambda: not check_health(address) and not check_health(address, "movakit.api.v1.JobService"))
        kafka_up.set()
        _until(lambda: check_health(address) and check_health(address, "movakit.api.v1.JobService"))
    finally:
        server.stop(0).wait()


def _until(condition, attempts: int = 200) -> None:
    for _ in range(attempts):
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("the health status never changed")
