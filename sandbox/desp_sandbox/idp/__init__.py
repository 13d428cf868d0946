"""Keycloak-shaped development OpenID Connect provider."""
