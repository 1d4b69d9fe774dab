"""``python -m depthdata``: the same as the ``depthdata`` command."""

import sys

from depthdata.cli import main

sys.exit(main())
