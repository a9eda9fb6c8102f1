"""`python -m kwatt_sidecar`: run the sidecar until SIGTERM."""

import sys

from kwatt_sidecar.app import main

sys.exit(main())
