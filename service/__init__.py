"""The control plane: REST API, CLI and the dashboard gateway."""
