"""Session fixtures: a REAL Tansu broker (Kafka protocol), a REAL SeaweedFS S3 server and a REAL redis-server (the
trainer's Celery broker, started only by the tests that use it) on free 127.0.0.1 ports.

Shared by every integration test. Topics are created once; the bucket once. Tests keep apart by using fresh
job ids (and fresh consumer group ids), never by restarting the servers.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import pytest

from movakit.runtime import kafka as mkafka
from movakit.runtime.auth import token_digest, with_token
from movakit.runtime.localstack import free_port, redis_url, start_redis, start_seaweedfs, start_tansu
from movakit.runtime.object_store import ObjectStore
from movakit.runtime.topics import ensure_topics

S3_ACCESS_KEY = "movakit-test"
S3_SECRET_KEY = "movakit-test-secret"
S3_BUCKET = "mova-test"
# Two tenants of the test gateways (the tokens file holds their digests); "alice" is the default caller.
TENANT_TOKENS = {"alice": "alice-test-token", "bob": "bob-test-token"}
KAFKA_SECRET = "kafka-test-secret"  # what the test services seal and open Kafka records with


@pytest.fixture(scope="session")
def kafka_secret() -> str:
    """The shared Kafka secret of the test services."""
    return KAFKA_SECRET


@pytest.fixture(scope="session")
def sealer(kafka_secret) -> mkafka.RecordSealer:
    """Seals and opens records like the test services."""
    return mkafka.RecordSealer(kafka_secret)


@dataclass(frozen=True)
class S3Config:
    endpoint: str  # host:port
    access_key: str
    secret_key: str
    bucket: str

    def store(self) -> ObjectStore:
        return ObjectStore(self.endpoint, self.access_key, self.secret_key, self.bucket)


@pytest.fixture(scope="session")
def tansu(tmp_path_factory):
    """A running Tansu broker (memory storage); yields its ManagedProcess."""
    broker = start_tansu(free_port(), tmp_path_factory.mktemp("tansu"))
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(tansu) -> str:
    """host:port of the broker, with every topic of movakit.runtime.topics created."""
    ensure_topics(tansu.address)
    return tansu.address


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    """A running SeaweedFS (`weed mini`) whose S3 API needs the test access keys; yields its ManagedProcess."""
    server = start_seaweedfs(free_port(), tmp_path_factory.mktemp("seaweedfs"), S3_ACCESS_KEY, S3_SECRET_KEY)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_config(seaweedfs) -> S3Config:
    """Endpoint, keys and bucket (created) of the test S3 server."""
    config = S3Config(seaweedfs.address, S3_ACCESS_KEY, S3_SECRET_KEY, S3_BUCKET)
    config.store().ensure_bucket()
    return config


@pytest.fixture(scope="session")
def celery_broker(tmp_path_factory) -> str:
    """redis:// URL (with its password) of a running redis-server."""
    port, password = free_port(), "movakit-test-redis"
    server = start_redis(port, tmp_path_factory.mktemp("redis"), password)
    yield redis_url(port, password)
    server.stop()


@pytest.fixture()
def object_store(s3_config) -> ObjectStore:
    return s3_config.store()


# ---- a gateway on its own broker (module scope) -------------------------------------------------------------------
# Gateway tests queue tasks that no stage worker should pick up, so they get a broker of their own.
@pytest.fixture(scope="module")
def gateway_kafka(tmp_path_factory):
    broker = start_tansu(free_port(), tmp_path_factory.mktemp("gateway-tansu"))
    ensure_topics(broker.address)
    yield broker.address
    broker.stop()


@pytest.fixture(scope="session")
def tokens_file(tmp_path_factory) -> str:
    """A gateway tokens file for the tenants of TENANT_TOKENS."""
    path = tmp_path_factory.mktemp("auth") / "tokens"
    path.write_text("".join(f"{tenant} {token_digest(token)}\n" for tenant, token in TENANT_TOKENS.items()))
    return str(path)


@pytest.fixture(scope="session")
def tenant_token():
    """A factory: tenant_token(tenant) -> that test tenant's token."""
    return TENANT_TOKENS.__getitem__


@pytest.fixture(scope="session")
def tenant_channel():
    """A factory: tenant_channel(address, tenant="alice") -> a channel sending that tenant's token."""
    return lambda address, tenant="alice": with_token(grpc.insecure_channel(address), TENANT_TOKENS[tenant])


def gateway_settings(kafka: str, s3_config, tokens_file: str, **overrides):
    """GatewaySettings for the test servers: free gRPC and HTTP ports, the tiny demo checkpoint's rules (any multiple-of-16 size),
    generous admission limits and dispatch slots (no worker finishes these jobs; each one's task is sent at once)."""
    from movakit.services.gateway.settings import GatewaySettings  # imported here: only gateway tests need it

    values = dict(
        listen=f"127.0.0.1:{free_port()}", http_listen=f"127.0.0.1:{free_port()}", kafka_bootstrap=kafka,
        s3_endpoint=s3_config.endpoint,
        s3_access_key=s3_config.access_key, s3_secret_key=s3_config.secret_key, s3_bucket=s3_config.bucket,
        tokens_file=tokens_file, kafka_secret=KAFKA_SECRET, max_active_jobs=1000, dispatch_slots=1000,
        startup_timeout_s=30.0,
    )
    values.update(overrides)
    settings = GatewaySettings(**values)
    settings.validate()
    return settings


@pytest.fixture(scope="module")
def gateway_config(gateway_kafka, s3_config, tokens_file):
    """A factory: gateway_config(**overrides) -> GatewaySettings on the module's broker and the test S3."""
    return lambda **overrides: gateway_settings(gateway_kafka, s3_config, tokens_file, **overrides)


@pytest.fixture(scope="module")
def gateway(gateway_config):
    """A running in-process gateway (RunningGateway: .address, .store, .stop())."""
    from movakit.services.gateway.main import start_gateway

    running = start_gateway(gateway_config())
    yield running
    running.stop()


@pytest.fixture(scope="module")
def producer(gateway_kafka):
    """A producer on the gateway tests' broker, for publishing what stage workers would."""
    p = mkafka.make_producer(gateway_kafka, mkafka.RecordSealer(KAFKA_SECRET))
    yield p
    p.close()
