"""Streamsend: stream files of any size through Apache Kafka, rebuilt byte for byte."""

__version__ = "0.1.0"
