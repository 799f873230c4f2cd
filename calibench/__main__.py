"""``python -m calibench`` is the ``calibench`` command."""

import sys

from calibench.cli import main

sys.exit(main())
