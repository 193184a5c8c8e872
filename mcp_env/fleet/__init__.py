"""The bundled offline fleet of real third-party MCP servers (catalog, locks, seed, installer)."""
