"""`python -m cluster.cli ...` is `snapline ...` (e.g. under `ray job submit`)."""
import sys

from cluster.cli import main

sys.exit(main())
