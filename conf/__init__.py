"""Hydra configs, found by Hydra as pkg://ssmbench.conf."""
