"""Sequence layers: each follows models.layers.base.SequenceLayer (forward, init_state, step)."""
