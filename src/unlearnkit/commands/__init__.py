"""CLI command groups: each module defines `register(app)` and is found automatically."""
