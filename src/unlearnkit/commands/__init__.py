"""CLI commands: one module per command, each registered explicitly in `unlearnkit.cli`."""
