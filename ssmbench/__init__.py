"""ssmbench: synthetic-task benchmarks for selective state space models."""

__version__ = "0.1.0"
