"""Who may do what at the gateway (real Tansu + SeaweedFS): tokens and tenants, bytes that are not a request,
idempotency keys reused with other parameters, and admission by estimated cost with a machine-readable retry
delay, and mutual TLS. The gateway runs in-process on the module's own broker (tests/integration/conftest.py)."""

from __future__ import annotations

import io
import shutil
import subprocess
import threading
import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from movakit.api.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from movakit.cli.jobs import retry_delay_s, submit_with_retries
from movakit.services.gateway.main import start_gateway

pytestmark = pytest.mark.integration

TINY = dict(prompt="a quiet lake", height=32, width=48, num_frames=5, fps=24, num_inference_steps=2)
METHODS = ("Submit", "Get", "Watch", "Cancel", "List")


@pytest.fixture(scope="module")
def alice(gateway, tenant_channel):
    with tenant_channel(gateway.address, "alice") as channel:
        yield gateway_pb2_grpc.JobServiceStub(channel)


@pytest.fixture(scope="module")
def bob(gateway, tenant_channel):
    with tenant_channel(gateway.address, "bob") as channel:
        yield gateway_pb2_grpc.JobServiceStub(channel)


@pytest.fixture(scope="module")
def raw(gateway, tenant_channel):
    """Method name -> a callable sending raw bytes as alice (no message class in between)."""
    channel = tenant_channel(gateway.address, "alice")
    calls = {name: (channel.unary_stream if name == "Watch" else channel.unary_unary)(f"/movakit.api.v1.JobService/{name}")
             for name in METHODS}
    yield calls
    channel.close()


def submit(stub, key: str = "", **params) -> gateway_pb2.SubmitResponse:
    request = gateway_pb2.SubmitRequest(params=common_pb2.GenerationParams(**{**TINY, **params}), idempotency_key=key)
    return stub.Submit(request, timeout=10)


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        result = call()
        if not isinstance(result, (common_pb2.Job, gateway_pb2.SubmitResponse, gateway_pb2.ListJobsResponse, bytes)):
            list(result)  # a stream: the status comes with the first read
    return err.value


# ---- tenants ---------------------------------------------------------------------------------------------------
def test_calls_without_a_valid_token_are_unauthenticated_but_health_stays_open(gateway):
    with grpc.insecure_channel(gateway.address) as channel:
        anonymous = gateway_pb2_grpc.JobServiceStub(channel)
        calls = [lambda: submit(anonymous),
                 lambda: anonymous.Get(gateway_pb2.GetJobRequest(job_id="x"), timeout=5),
                 lambda: anonymous.Watch(gateway_pb2.WatchJobRequest(job_id="x"), timeout=5),
                 lambda: anonymous.Cancel(gateway_pb2.CancelJobRequest(job_id="x"), timeout=5),
                 lambda: anonymous.List(gateway_pb2.ListJobsRequest(), timeout=5)]
        for call in calls:
            error = code_of(call)
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED and "authorization" in error.details()
        for header in ("Bearer not-a-token", "Basic alice-test-token", "Bearer "):
            with pytest.raises(grpc.RpcError) as err:
                anonymous.List(gateway_pb2.ListJobsRequest(), timeout=5, metadata=[("authorization", header)])
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, header
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING


def test_a_second_tenant_sees_nothing_of_the_first(alice, bob):
    key = f"shared-{uuid.uuid4().hex}"
    mine = submit(alice, key=key).job
    assert mine.tenant == "alice"
    for call in (lambda: bob.Get(gateway_pb2.GetJobRequest(job_id=mine.job_id), timeout=5),
                 lambda: bob.Watch(gateway_pb2.WatchJobRequest(job_id=mine.job_id), timeout=5),
                 lambda: bob.Cancel(gateway_pb2.CancelJobRequest(job_id=mine.job_id), timeout=5)):
        error = code_of(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND  # exactly what an unknown id answers
    listed = [j.job_id for j in bob.List(gateway_pb2.ListJobsRequest(page_size=100), timeout=5).jobs]
    assert mine.job_id not in listed
    theirs = submit(bob, key=key, prompt="another request")  # keys are per tenant: bob's is a new job
    assert not theirs.existing and theirs.job_id != mine.job_id
    assert alice.Get(gateway_pb2.GetJobRequest(job_id=mine.job_id), timeout=5).state == common_pb2.JOB_STATE_QUEUED
    assert mine.job_id in [j.job_id for j in alice.List(gateway_pb2.ListJobsRequest(page_size=100), timeout=5).jobs]


# ---- Kafka records without the stack's secret ----------------------------------------------------------------------
def test_a_forged_failed_event_does_not_fail_a_job(alice, gateway, gateway_kafka, producer):
    from google.protobuf.timestamp_pb2 import Timestamp

    from movakit.api.v1 import events_pb2
    from movakit.runtime import kafka as mkafka
    from movakit.runtime.topics import TOPIC_EVENTS

    job_id = submit(alice, prompt=f"target {uuid.uuid4().hex}").job_id
    forger = mkafka.make_producer(gateway_kafka, mkafka.RecordSealer("guessed-secret"))
    now = Timestamp()
    now.GetCurrentTime()
    forged = events_pb2.JobEvent(job_id=job_id, time=now, source="decoder", failed=events_pb2.Failed(reason="forged"))
    mkafka.publish(forger, TOPIC_EVENTS, job_id, forged)
    forger.close()
    # Then a genuine event on the same partition (same key): once the gateway shows it, it has read the forgery too.
    genuine = events_pb2.JobEvent(job_id=job_id, time=now, source="encoder",
                                  stage_started=events_pb2.StageStarted(stage=common_pb2.STAGE_ENCODE))
    mkafka.publish(producer, TOPIC_EVENTS, job_id, genuine)
    for _ in range(100):
        job = alice.Get(gateway_pb2.GetJobRequest(job_id=job_id), timeout=5)
        if job.stage == common_pb2.STAGE_ENCODE:
            break
        threading.Event().wait(0.1)
    assert job.stage == common_pb2.STAGE_ENCODE
    assert job.state == common_pb2.JOB_STATE_RUNNING and not job.failure_reason


def test_a_reader_without_the_secret_sees_no_prompt(alice, gateway_kafka, sealer):
    from kafka import KafkaConsumer, TopicPartition

    from movakit.runtime.topics import TOPIC_ENHANCE, TOPIC_EVENTS, TOPIC_JOB_STATE

    prompt = f"a secret lighthouse {uuid.uuid4().hex}".encode()
    job_id = submit(alice, prompt=prompt.decode()).job_id  # its record, queued event and first task are in Kafka
    raw = KafkaConsumer(bootstrap_servers=gateway_kafka, group_id=None, enable_auto_commit=False,
                        consumer_timeout_ms=3000)  # a local process with no secret, reading like any client
    topics = (TOPIC_JOB_STATE, TOPIC_EVENTS, TOPIC_ENHANCE)
    partitions = [TopicPartition(t, p) for t in topics for p in raw.partitions_for_topic(t)]
    raw.assign(partitions)
    raw.seek_to_beginning(*partitions)
    end = raw.end_offsets(partitions)
    read, opened = [], set()
    while any(raw.position(tp) < end[tp] for tp in partitions):
        for records in raw.poll(timeout_ms=500).values():
            read += records
    raw.close()
    mine = [r for r in read if r.key == job_id.encode()]
    for record in mine:  # the stack's secret opens each of them and finds the prompt ...
        if prompt in (sealer.open(record) or b""):
            opened.add(record.topic)
    assert opened == set(topics)
    for record in read:  # ... while the bytes in Kafka hold it nowhere, in no value and no header
        assert prompt not in (record.value or b"") and all(prompt not in (d or b"") for _, d in record.headers)


# ---- malformed input ---------------------------------------------------------------------------------------------
CORPUS = [b"\xff" * 7, b"\x0a\xff\xff\xff\xff\x0f", b"\x12", b"\x0b\x00", bytes(range(256))]  # bad tags/lengths
STRING_TAG = {"Submit": b"\x1a", "Get": b"\x0a", "Watch": b"\x0a", "Cancel": b"\x0a", "List": b"\x12"}  # a string field


@pytest.mark.parametrize("method", METHODS)
def test_bytes_that_are_no_message_get_invalid_argument(raw, method):
    invalid_utf8 = [STRING_TAG[method] + b"\x05\xc3\x28\xa0\xa1\xff", STRING_TAG[method] + b"\x02\xed\xa0"]
    for body in CORPUS + invalid_utf8:
        error = code_of(lambda: raw[method](body, timeout=5))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, body)
        assert len(error.details()) < 200


@pytest.mark.parametrize("method", ("Get", "Watch", "Cancel"))
def test_a_huge_job_id_is_refused_with_a_short_message(alice, method):
    request = {"Get": gateway_pb2.GetJobRequest, "Watch": gateway_pb2.WatchJobRequest,
               "Cancel": gateway_pb2.CancelJobRequest}[method](job_id="7" * 100_000)
    error = code_of(lambda: getattr(alice, method)(request, timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("job_id:") and len(error.details()) < 200


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(METHODS), body=st.binary(max_size=300))
def test_fuzzed_bodies_never_get_internal(raw, method, body):
    try:
        result = raw[method](body, timeout=10)
        if method == "Watch":
            next(iter(result), None)
    except grpc.RpcError as exc:
        assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                              grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.DEADLINE_EXCEEDED), exc
        assert len(exc.details()) < 300


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=st.text(max_size=60), height=st.integers(0, 2**32 - 1), frames=st.integers(0, 2**32 - 1),
       fps=st.floats(allow_nan=True, allow_infinity=True, width=32), key=st.text(max_size=20))
def test_fuzzed_submit_fields_get_a_named_field_or_a_job(alice, prompt, height, frames, fps, key):
    params = common_pb2.GenerationParams(prompt=prompt, height=height, width=48, num_frames=frames, fps=fps,
                                         num_inference_steps=1)
    try:
        alice.Submit(gateway_pb2.SubmitRequest(params=params, idempotency_key=key), timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS), exc
        assert exc.details().split(":")[0] in {"params.prompt", "params.height", "params.num_frames", "params.fps",
                                               "params.width", "idempotency_key", "params"}, exc.details()


# ---- idempotency -------------------------------------------------------------------------------------------------
def test_a_key_reused_with_other_parameters_is_refused_also_under_concurrency(alice):
    key = f"conflict-{uuid.uuid4().hex}"
    first = submit(alice, key=key, seed=1)
    error = code_of(lambda: submit(alice, key=key, seed=2))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert f"idempotency_key: {key!r}" in error.details() and first.job_id in error.details()

    racing = f"race-{uuid.uuid4().hex}"
    outcomes: list[object] = []

    def one(seed: int) -> None:
        try:
            outcomes.append(submit(alice, key=racing, seed=seed).job_id)
        except grpc.RpcError as exc:
            outcomes.append(exc.code())

    threads = [threading.Thread(target=one, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    jobs = [o for o in outcomes if isinstance(o, str)]
    assert len(jobs) == 1  # one seed won; every other one was refused, none got that job silently
    assert outcomes.count(grpc.StatusCode.ALREADY_EXISTS) == 7


# ---- admission ---------------------------------------------------------------------------------------------------
def test_admission_counts_cost_per_tenant_and_names_a_retry_delay(gateway_config, tenant_channel):
    # 5 frames x 32 x 48 x 2 steps = 15,360 pixel-steps; at 100 GPU-s per megapixel-step about 1.5 GPU-s.
    # bob's one earlier job was costed at the default rate (tiny), so it barely counts here; alice's (fuzzed) jobs
    # count only against the overall limit, set high.
    limited = start_gateway(gateway_config(gpu_s_per_mpixel_step=100.0, tenant_max_gpu_s=4.0, max_queued_gpu_s=1e6))
    try:
        with tenant_channel(limited.address, "alice") as a, tenant_channel(limited.address, "bob") as b:
            bob, alice = gateway_pb2_grpc.JobServiceStub(b), gateway_pb2_grpc.JobServiceStub(a)
            big = code_of(lambda: submit(bob, num_inference_steps=6))  # ~4.6 GPU-s: more than a tenant may hold
            assert big.code() == grpc.StatusCode.INVALID_ARGUMENT and big.details().startswith("params:")
            first = submit(bob, prompt=f"one {uuid.uuid4().hex}").job
            assert first.cost_gpu_s == pytest.approx(1.536)
            submit(bob, prompt=f"two {uuid.uuid4().hex}")
            refused = code_of(lambda: submit(bob, prompt=f"three {uuid.uuid4().hex}"))
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "tenant quota" in refused.details()
            status = rpc_status.from_call(refused)
            info = error_details_pb2.RetryInfo()
            assert status.details[0].Unpack(info)
            assert info.retry_delay.ToNanoseconds() / 1e9 == retry_delay_s(refused) >= 1.0
            assert submit(alice, prompt=f"alice {uuid.uuid4().hex}").job.tenant == "alice"  # bob cannot fill it

            # `mova submit` waits the named delay, doubling it, and gives up after its retries.
            waits: list[float] = []
            request = gateway_pb2.SubmitRequest(params=common_pb2.GenerationParams(**TINY))
            with pytest.raises(grpc.RpcError) as err:
                submit_with_retries(bob, request, 2, sleep=waits.append, err=io.StringIO())
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            delay = retry_delay_s(refused)
            assert len(waits) == 2 and delay <= waits[0] <= 1.1 * delay and 2 * delay <= waits[1] <= 2.2 * delay
    finally:
        limited.stop()


# ---- mutual TLS --------------------------------------------------------------------------------------------------
def _certificates(folder) -> dict[str, str]:
    """A CA plus a server and a client certificate it signed (openssl CLI), as PEM file paths."""
    def run(*argv: str) -> None:
        subprocess.run(["openssl", *argv], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=mova-test-ca")
    for name in ("server", "client"):
        (folder / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return {name: str(folder / name) for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make certificates")
def test_mutual_tls_admits_only_clients_with_a_certificate(gateway_config, tmp_path, tenant_token):
    pem = _certificates(tmp_path)
    secured = start_gateway(gateway_config(tls_cert_file=pem["server.pem"], tls_key_file=pem["server.key"],
                                           tls_client_ca_file=pem["ca.pem"], http_listen=""))
    read = lambda name: open(pem[name], "rb").read()  # noqa: E731
    try:
        with_cert = grpc.ssl_channel_credentials(read("ca.pem"), read("client.key"), read("client.pem"))
        with grpc.secure_channel(secured.address, with_cert) as channel:
            stub = gateway_pb2_grpc.JobServiceStub(channel)
            listed = stub.List(gateway_pb2.ListJobsRequest(), timeout=10,
                               metadata=[("authorization", f"Bearer {tenant_token('alice')}")])
            assert isinstance(listed, gateway_pb2.ListJobsResponse)
            no_token = code_of(lambda: stub.List(gateway_pb2.ListJobsRequest(), timeout=10))
            assert no_token.code() == grpc.StatusCode.UNAUTHENTICATED  # a certificate does not replace the token
        without_cert = grpc.ssl_channel_credentials(read("ca.pem"))
        with grpc.secure_channel(secured.address, without_cert) as channel:
            refused = code_of(lambda: gateway_pb2_grpc.JobServiceStub(channel).List(
                gateway_pb2.ListJobsRequest(), timeout=10, metadata=[("authorization", f"Bearer {tenant_token('alice')}")]))
            assert refused.code() == grpc.StatusCode.UNAVAILABLE  # the handshake fails
        with grpc.insecure_channel(secured.address) as channel:
            assert code_of(lambda: gateway_pb2_grpc.JobServiceStub(channel).List(
                gateway_pb2.ListJobsRequest(), timeout=10)).code() == grpc.StatusCode.UNAVAILABLE
    finally:
        secured.stop()
