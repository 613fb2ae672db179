"""evrelay: a command-line event relay and inspection tool (Kafka, Redis Streams, local, JSONL)."""

__version__ = "0.1.0"
