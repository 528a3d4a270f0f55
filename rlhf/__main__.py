"""`python -m rlhf ...` is the `rlhf` command."""

from rlhf.cli import main

raise SystemExit(main())
