"""Alias of the torch-free client: ``python -m server.client generate "PROMPT" --out DIR``.

Everything lives in `xcube_client` (stdlib + grpcio + protobuf only), which the Blender add-on vendors.
"""

from __future__ import annotations

import sys

from xcube_client import *  # noqa: F401,F403
from xcube_client import __all__  # noqa: F401
from xcube_client.cli import main

if __name__ == "__main__":
    sys.exit(main())
