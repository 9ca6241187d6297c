"""`python -m rerankrt` is the `rerankrt` command."""

import sys

from rerankrt.cli import main

sys.exit(main())
