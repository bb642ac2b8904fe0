"""How the Kafka clients authenticate to the broker: PLAINTEXT (the local Tansu of `mova stack up`, loopback
only) or SASL (SCRAM on a real Kafka: docker-compose.yml, infra/k8s). A small module with no client imports, so
the settings classes can check values without loading kafka-python.

Read protection does not depend on this: every record is sealed with the stack's Kafka secret anyway
(movakit/runtime/kafka.py). SASL keeps strangers off the broker (and, with ACLs, off each topic).
"""

from __future__ import annotations

from dataclasses import dataclass

SECURITY_PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


@dataclass(frozen=True)
class ClientAuth:
    security_protocol: str = "PLAINTEXT"  # one of SECURITY_PROTOCOLS
    sasl_mechanism: str = "SCRAM-SHA-512"  # one of SASL_MECHANISMS; used with the SASL_* protocols
    username: str = ""
    password: str = ""

    def problem(self) -> tuple[str, str] | None:
        """(the field at fault, why) when the values do not make a usable client configuration; else None."""
        if self.security_protocol not in SECURITY_PROTOCOLS:
            return "security_protocol", f"one of {', '.join(SECURITY_PROTOCOLS)}, got {self.security_protocol!r}"
        if self.security_protocol == "PLAINTEXT":
            return None
        if self.sasl_mechanism not in SASL_MECHANISMS:
            return "sasl_mechanism", f"one of {', '.join(SASL_MECHANISMS)}, got {self.sasl_mechanism!r}"
        if not self.username or not self.password:
            return ("sasl_username" if not self.username else "sasl_password",
                    f"required with security protocol {self.security_protocol}")
        return None

    def options(self) -> dict[str, str]:
        """Keyword arguments for kafka-python's KafkaProducer, KafkaConsumer and KafkaAdminClient."""
        if self.security_protocol == "PLAINTEXT":
            return {}
        # kafka-python takes the SCRAM credentials in its sasl_plain_* arguments too.
        return {"security_protocol": self.security_protocol, "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.username, "sasl_plain_password": self.password}


NO_AUTH = ClientAuth()
