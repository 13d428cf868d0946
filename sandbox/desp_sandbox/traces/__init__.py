"""Sandbox trace service: a stand-in for the platform's traceability API (Copernicus traceability API shape)."""
