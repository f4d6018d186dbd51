"""`python -m inference_client transcribe ...`."""

import sys

from inference_client.cli import main

sys.exit(main())
