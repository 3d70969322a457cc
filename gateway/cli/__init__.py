"""The `ledgerhook` command line, one module per command group (entry point: `gateway.cli.__main__`).

It imports nothing itself, so that a Ctrl-C while the command line loads is handled there.
"""
