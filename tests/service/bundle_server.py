"""The firmware tests' ``FileServer`` (``tests/firmware/device_kit.py``) as a process of its
own, for inside the systemd sandbox, whose network namespace the tests' process is not in.

``python bundle_server.py DIR PORT [--slow NAME --rate B/S --stall-at N]`` serves every file
of DIR on 127.0.0.1:PORT, ``Range: bytes=N-`` answered with 206; NAME's whole-file answers
are paced to B/S and stop after N bytes, the connection left open (a server that hangs in
the middle of a body), its ranged ones are not. Each request is printed, as soon as its
answer has started, as one JSON line (``path``, ``range``, ``status``): under
``systemd-run``, the journal of its unit is the server's request log. Needs ``tests`` and
``tests/firmware`` on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from device_kit import FileServer

POLL_S = 0.05


def serve(directory: Path, port: int, slow: str | None, rate: float | None,
          stall_at: int | None) -> None:
    server = FileServer(port=port)
    for path in sorted(directory.iterdir()):
        if path.name == slow:
            server.add(path.name, path, rate=rate, stall_at=stall_at)
        else:
            server.add(path.name, path)
    print(json.dumps({"serving": sorted(server.files), "port": server.port}), flush=True)
    printed = 0
    # Until the unit is stopped (SIGTERM ends the process).
    while True:
        time.sleep(POLL_S)
        while printed < len(server.requests) and server.requests[printed].status:
            request = server.requests[printed]
            print(json.dumps({"path": request.path, "range": request.range,
                              "status": request.status}), flush=True)
            printed += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("port", type=int)
    parser.add_argument("--slow", help="the file served slowly")
    parser.add_argument("--rate", type=float, help="its pace, bytes per second")
    parser.add_argument("--stall-at", type=int, help="where its body stops")
    options = parser.parse_args()
    serve(options.directory, options.port, options.slow, options.rate, options.stall_at)


if __name__ == "__main__":
    main()
