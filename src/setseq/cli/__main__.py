"""`python -m setseq.cli` (and `torchrun -m setseq.cli`) runs the command line."""

import sys

from setseq.cli import main

sys.exit(main())
