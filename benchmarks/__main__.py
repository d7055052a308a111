"""``python -m benchmarks``, run from the top directory of a source checkout."""

import sys

from benchmarks import main

sys.exit(main())
