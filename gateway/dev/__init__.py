"""`ledgerhook dev`: the embedded stack, signed samples and the provider emulator."""
