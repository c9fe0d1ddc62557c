"""`python -m nc` is the `nc` command."""
import sys

from nc.cli.main import main

sys.exit(main())
