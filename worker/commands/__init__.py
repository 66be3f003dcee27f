"""The `python -m worker` subcommands: each module has `add_arguments(parser)` and `run(args)`."""
