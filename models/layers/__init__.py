"""Sequence layers: each follows models.layers.base.SequenceLayer (forward, allocate_cache, prefill, step)."""
