"""How the services reach Kafka: small interfaces, the Kafka implementation, and an
in-memory implementation for fast deterministic tests."""
