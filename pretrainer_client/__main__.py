"""`python -m pretrainer_client`: the client commands alone."""

import sys

from pretrainer_client.cli import main

sys.exit(main())
