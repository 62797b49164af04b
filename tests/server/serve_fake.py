"""Run a server over `FakePipeline` in its own process (tests kill it mid-stream).

Prints the bound port on stdout, then serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import signal
import sys
import threading

sys.path.insert(0, __file__.rsplit("/", 1)[0])

from fake_pipeline import FakePipeline  # noqa: E402

from server.app import create_server  # noqa: E402

if __name__ == "__main__":
    step_delay = float(sys.argv[1]) if len(sys.argv) > 1 else 0.02
    server, port = create_server(FakePipeline(step_delay=step_delay), port=0, supported_outputs=("raw",))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    print(port, flush=True)
    while not stop.wait(0.2):
        pass
    server.stop(2.0)
