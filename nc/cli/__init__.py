"""The `nc` command-line tool."""
from nc.cli.main import main

__all__ = ["main"]
