"""``python -m dev.workload``: the billing workload's command line (see :mod:`dev.workload.tsql`)."""

import sys

from dev.workload.tsql import main

sys.exit(main())
