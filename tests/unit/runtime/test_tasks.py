"""direct_rpc: one generic servicer serves any stage whose gRPC method matches its task and output types."""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest

from movakit.api.v1 import common_pb2, decoder_pb2, encoder_pb2, encoder_pb2_grpc, events_pb2
from movakit.runtime.tasks import direct_rpc


class _Encode:
    """The encoder's shape of handler without a store: every call fails inside run-or-reuse (the store tests with a
    real S3 server are in tests/integration; the real services' direct RPCs in tests/integration/test_stack.py)."""

    rpc_service = encoder_pb2.DESCRIPTOR.services_by_name["Encoder"]
    store = None
    stage = common_pb2.STAGE_ENCODE
    stage_name = "encode"
    task_type = events_pb2.EncodeTask
    output_type = encoder_pb2.EncodeOutput


def test_a_service_whose_method_takes_other_types_is_refused():
    class Mismatched(_Encode):
        rpc_service = decoder_pb2.DESCRIPTOR.services_by_name["Decoder"]

    with pytest.raises(TypeError, match="movakit.api.v1.Decoder.Decode does not take EncodeTask"):
        direct_rpc(Mismatched(), "encoder")


def test_the_generic_servicer_answers_the_stage_rpc_by_its_proto_name():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    names = direct_rpc(_Encode(), "encoder")(server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        assert names == ["movakit.api.v1.Encoder"]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.RpcError) as err:  # the store is None: run_or_reuse fails inside the stage
                encoder_pb2_grpc.EncoderStub(channel).Encode(events_pb2.EncodeTask(job_id="j1"), timeout=10)
        assert err.value.code() == grpc.StatusCode.INTERNAL and err.value.details().startswith("encode failed:")
    finally:
        server.stop(0)
