"""Idle connections for proxy/tests/floods.rs.

usage: idleconns.py HOST PORT N DEADLINE_SECS [EXTRA_AFTER_SECS]

Opens N connections that never send a byte (and, with EXTRA_AFTER_SECS, one
more after that delay), prints "connected N", then waits until the server has
closed each (EOF or reset) or DEADLINE_SECS pass. Prints one JSON line: how
many were closed, and when (seconds after opening).
"""

import json
import selectors
import socket
import sys
import time


def main():
    host, port, n, deadline = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    extra_after = float(sys.argv[5]) if len(sys.argv) > 5 else None
    sel = selectors.DefaultSelector()
    opened = {}
    for _ in range(n):
        s = socket.create_connection((host, port), timeout=5)
        s.setblocking(False)
        opened[s.fileno()] = (s, time.monotonic())
        sel.register(s, selectors.EVENT_READ)
    extra = None
    if extra_after is not None:
        time.sleep(extra_after)
        s = socket.create_connection((host, port), timeout=5)
        s.setblocking(False)
        extra = s.fileno()
        opened[extra] = (s, time.monotonic())
        sel.register(s, selectors.EVENT_READ)
    print(f"connected {len(opened)}", flush=True)
    closed = {}
    end = time.monotonic() + deadline
    while len(closed) < len(opened) and time.monotonic() < end:
        for key, _ in sel.select(timeout=0.5):
            s, t0 = opened[key.fd]
            try:
                data = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                closed[key.fd] = round(time.monotonic() - t0, 3)
                sel.unregister(s)
    times = [v for k, v in closed.items() if k != extra]
    print(
        json.dumps(
            {
                "opened": len(opened),
                "closed": len(closed),
                "min_closed_secs": min(times) if times else None,
                "max_closed_secs": max(times) if times else None,
                "extra_closed_secs": closed.get(extra),
            }
        ),
        flush=True,
    )
    for s, _ in opened.values():
        s.close()


if __name__ == "__main__":
    main()
