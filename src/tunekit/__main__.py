"""``python -m tunekit``: the command line (see `tunekit.cli`)."""

from tunekit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
