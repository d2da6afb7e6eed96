"""`python -m tdsm_core` runs the command line."""
import sys

from .cli.main import main

sys.exit(main())
