"""``python -m benchmarks.identity``: see :mod:`benchmarks.identity.run`."""

from benchmarks.identity.run import main

raise SystemExit(main())
