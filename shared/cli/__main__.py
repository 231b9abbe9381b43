"""``python -m shared.cli``: the ``kaihooks`` command."""

from shared.cli.app import main

raise SystemExit(main())
