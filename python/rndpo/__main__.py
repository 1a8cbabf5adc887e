"""`python -m rndpo` runs the command-line interface."""

from rndpo.cli import main

raise SystemExit(main())
