"""`python -m xlstm_ts fit|predict|cv ...`; `python -m xlstm_ts --help` lists the options."""

import sys

from xlstm_ts.cli import main

sys.exit(main())
