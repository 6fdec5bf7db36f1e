"""A local Apache Kafka cluster (KRaft, from Maven Central jars) for trying Streamsend and for
its tests: ``streamsend kafka up|down|status|fetch`` and the same as a Python API.
"""

from streamsend.localkafka import commands
from streamsend.localkafka.cluster import Cluster, NodeState, default_dir, down, status, up
from streamsend.localkafka.jars import KAFKA_VERSION

__all__ = [
    "KAFKA_VERSION",
    "Cluster",
    "NodeState",
    "commands",
    "default_dir",
    "down",
    "status",
    "up",
]
