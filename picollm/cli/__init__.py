"""The `picollm` command: one module per subcommand."""
