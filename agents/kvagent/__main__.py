"""`python -m kvagent <kind> --config FILE`."""

import sys

from kvagent.main import main

sys.exit(main())
