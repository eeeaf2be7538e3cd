"""``python -m scrubin``."""

import sys

from scrubin.cli import main

sys.exit(main())
