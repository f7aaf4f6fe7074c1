"""``python -m claimcheck`` runs the CLI (the demo starts its children this way)."""

from claimcheck.cli import main

main()
