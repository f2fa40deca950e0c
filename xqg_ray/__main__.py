"""``python -m xqg_ray`` == ``xqg-ray``."""

import sys

from .cli import main

sys.exit(main())
