"""
C{python -m bench}: run the benchmark (see L{bench._cli}).
"""

import sys

from bench._cli import main

sys.exit(main())
