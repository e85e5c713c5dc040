"""`python -m attnforms` runs the command-line tool."""
import sys

from .cli import main

if __name__ == "__main__":  # not again in the demo's worker processes
    sys.exit(main())
