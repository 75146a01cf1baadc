"""`python -m tests.backing run -- CMD [ARG...]`: see tests/backing/cli.py."""

import sys

from .cli import main

sys.exit(main())
