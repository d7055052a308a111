"""``python -m atomr``: the atomr command line (see :mod:`atomr.cli`)."""

from atomr.cli import main

raise SystemExit(main())
