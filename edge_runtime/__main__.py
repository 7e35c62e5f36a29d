import logging
import os
import sys

from edge_runtime.cli.main import main

code = main()
# Leave without interpreter finalisation: a capture thread abandoned inside a blocked native read
# (a stalled camera) would otherwise abort the process at exit and turn exit 0 into SIGABRT.
try:
    sys.stdout.flush()
except (BrokenPipeError, ValueError, OSError):
    pass
logging.shutdown()
os._exit(code)
