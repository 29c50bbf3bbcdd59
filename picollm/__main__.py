"""`python -m picollm COMMAND ...` is the `picollm` command."""

from picollm.cli.main import run

run()
