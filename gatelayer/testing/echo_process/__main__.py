"""
Entry point of the test echo process: C{python -m gatelayer.testing.echo_process NAME [PORT]}.
The only place this test helper touches the global reactor.
"""

import sys

from twisted.internet import reactor

from gatelayer.testing.echo_process import main

sys.exit(main(sys.argv[1:], reactor))
