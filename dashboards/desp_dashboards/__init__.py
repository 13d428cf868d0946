"""DESP dashboards: Panel apps (visualisation, executive statistics)."""
