"""DESP sandbox: local stand-ins of the DESP platform services, for one machine. Development only."""
