"""`python -m reservas.projections projector|rebuild|dead-letters|replay-dead-letters` (what `eventflow projector` /
`eventflow projections ...` run)."""

import sys

from reservas.projections.cli import main

sys.exit(main())
