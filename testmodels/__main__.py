"""`python -m testmodels`: build the random-weight model folders (see `--help`)."""

import sys

from testmodels import main

sys.exit(main())
