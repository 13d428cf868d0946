"""pytest plugin: the sandbox traces service (fixtures arrive with issue 5)."""
