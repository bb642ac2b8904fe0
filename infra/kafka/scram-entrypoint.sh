#!/bin/bash
# Entry point of docker-compose's apache/kafka broker with SASL/SCRAM on its client listeners.
#
# A KRaft broker learns SCRAM users from its metadata log, and on a broker that already demands SASL the only way
# to add the first user is at format time (`kafka-storage.sh format --add-scram`). So on the first start this
# formats the storage with the services' user, then hands over to the image's own launcher, which finds the
# storage formatted and starts the broker. It also writes /tmp/client.properties for the healthcheck.
set -euo pipefail
: "${CLUSTER_ID:?}" "${KAFKA_LOG_DIRS:?}" "${MOVA_KAFKA_SASL_USERNAME:?}" "${MOVA_KAFKA_SASL_PASSWORD:?}"

cat > /tmp/client.properties <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="${MOVA_KAFKA_SASL_USERNAME}" password="${MOVA_KAFKA_SASL_PASSWORD}";
PROPERTIES

if [ ! -f "${KAFKA_LOG_DIRS}/meta.properties" ]; then
  cat > /tmp/format.properties <<PROPERTIES
process.roles=${KAFKA_PROCESS_ROLES}
node.id=${KAFKA_NODE_ID}
controller.quorum.voters=${KAFKA_CONTROLLER_QUORUM_VOTERS}
controller.listener.names=${KAFKA_CONTROLLER_LISTENER_NAMES}
listeners=${KAFKA_LISTENERS}
listener.security.protocol.map=${KAFKA_LISTENER_SECURITY_PROTOCOL_MAP}
inter.broker.listener.name=${KAFKA_INTER_BROKER_LISTENER_NAME}
log.dirs=${KAFKA_LOG_DIRS}
PROPERTIES
  /opt/kafka/bin/kafka-storage.sh format --cluster-id "${CLUSTER_ID}" --config /tmp/format.properties \
    --add-scram "SCRAM-SHA-512=[name=${MOVA_KAFKA_SASL_USERNAME},password=${MOVA_KAFKA_SASL_PASSWORD}]"
fi
exec /etc/kafka/docker/run
