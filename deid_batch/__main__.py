"""``python -m deid_batch`` runs the ``deid-batch`` command line."""

import sys

from deid_batch.cli import main

sys.exit(main())
