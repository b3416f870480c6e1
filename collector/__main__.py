"""`python -m collector` is the same as the `llm-collector` command."""

from collector.cli import main

raise SystemExit(main())
