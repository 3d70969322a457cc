"""The `ledgerhook` console script, and `python -m gateway.cli`."""

import sys

# 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C.
INTERRUPTED = 130


def run() -> None:
    """Run the command line; a Ctrl-C while it is still loading exits 130 without a traceback."""
    try:
        from gateway.cli.main import main
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    sys.exit(main())


if __name__ == "__main__":
    run()
