import sys

from alexnet_core.cli import main

sys.exit(main())
