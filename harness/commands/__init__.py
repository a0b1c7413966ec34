"""The ``harness`` subcommands: each module adds its arguments and runs one command."""
