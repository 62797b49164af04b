import sys

from xcube_client.cli import main

sys.exit(main())
