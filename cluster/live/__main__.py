"""`python -m cluster.live append|delete|compact ...`: the entry `ray job submit` runs."""
import sys

from cluster.cli.live_commands import live_main

sys.exit(live_main())
