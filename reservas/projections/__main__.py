"""`python -m reservas.projections projector|rebuild` (what `eventflow projector` / `projections rebuild` run)."""

import sys

from reservas.projections.cli import main

sys.exit(main())
