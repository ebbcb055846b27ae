"""`python -m cluster.build --config build.yaml`: the entry `ray job submit` runs."""
import sys

from cluster.build.pipeline import main

sys.exit(main())
