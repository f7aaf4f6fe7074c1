"""Log format for every command: one line per event, with the component's name."""

import logging
import sys


def configure(level: str, component: str) -> None:
    """Send logs to stderr so stdout stays for results."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)-7s {component} %(name)s: %(message)s",
    )
    logging.getLogger("pika").setLevel(logging.WARNING)
    logging.getLogger("botocore").setLevel(logging.WARNING)
