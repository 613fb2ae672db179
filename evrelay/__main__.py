"""`python -m evrelay` runs the CLI."""

from evrelay.cli import main

main()
