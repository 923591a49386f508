"""The `tokengate` command line: one module per command group."""
