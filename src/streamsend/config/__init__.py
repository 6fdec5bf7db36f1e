"""The configuration model and everything derived from it: loading with precedence,
validation, the generated docs, and the table of librdkafka property names."""
