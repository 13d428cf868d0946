"""pytest plugin: the sandbox accounting service (fixtures arrive with issue 5)."""
