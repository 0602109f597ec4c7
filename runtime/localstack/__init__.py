"""Real Kafka-protocol, Postgres and Redis servers for a machine with no Docker engine."""

from runtime.localstack.docker import docker_available
from runtime.localstack.process import ServerStatus
from runtime.localstack.stack import LocalStack

__all__ = ["LocalStack", "ServerStatus", "docker_available"]
