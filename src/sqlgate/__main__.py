"""``python -m sqlgate``: the command line (see ``sqlgate.cli``)."""

from sqlgate.cli import main

raise SystemExit(main())
