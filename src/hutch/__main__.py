"""``python -m hutch``: the same command line as the ``hutch`` script."""

from hutch._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
