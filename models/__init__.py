"""Sequence models: layers, blocks, the language-model wrapper, and the registry that builds them."""
