import sys

from vip_sidecar.cli import main

sys.exit(main())
