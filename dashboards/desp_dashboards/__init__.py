"""DESP dashboards: Panel apps (visualisation, executive statistics)."""

from .natural_earth import offline_maps

__all__ = ["offline_maps"]
