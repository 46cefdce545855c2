"""Synthetic task generators."""
from .base import IGNORE, Batch, Task

__all__ = ["IGNORE", "Batch", "Task"]
