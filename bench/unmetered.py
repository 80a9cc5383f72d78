"""``gearworker run`` without Prometheus bookkeeping: what the worker costs once metrics are only kept when served.

The bench's "no metrics" row runs this.  The server creates its Metrics
object even when no ``--metrics`` address is given; every job then pays for
three labelled prometheus-client updates (about 3 us of its ~14 us here)
that nobody can read.
"""

import sys

import gearworker.server
from gearworker.cli import main

gearworker.server._metrics = lambda: None  # the proposed behaviour when settings.metrics is unset
sys.argv[0] = "gearworker"
sys.exit(main())
