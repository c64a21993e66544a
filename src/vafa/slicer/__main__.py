"""``python -m vafa.slicer MODULE ARGS…``: what the installed Slicer modules run."""

import sys

from vafa.slicer.run import main

sys.exit(main())
