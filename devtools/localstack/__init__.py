"""Real Kafka-protocol, Postgres and Redis servers for a machine with no Docker engine."""

from devtools.localstack.docker import docker_available
from devtools.localstack.process import ServerStatus
from devtools.localstack.stack import LocalStack

__all__ = ["LocalStack", "ServerStatus", "docker_available"]
