import sys

from xcube_core.cli import main

sys.exit(main())
