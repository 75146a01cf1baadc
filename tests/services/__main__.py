"""`python -m tests.services run -- CMD [ARG...]`: see tests/services/cli.py."""

import sys

from .cli import main

sys.exit(main())
