"""``python -m vafa`` is the ``vafa`` command line."""

import sys

from vafa.cli import main

sys.exit(main())
