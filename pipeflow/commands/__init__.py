"""CLI sub-commands. Each module here defines ``register(subparsers)``.

``register`` adds one or more argparse sub-parsers and sets
``func=async_or_sync_callable(args) -> int`` on each with ``set_defaults``.
The CLI imports every module of this package, so a new command is a new file.
"""
