"""Shared test helpers and fixtures, one module per kind (images, sandbox, service, cli)."""
