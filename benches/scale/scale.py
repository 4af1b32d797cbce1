#!/usr/bin/env python3
"""Scale benchmark: what N services cost.

For each N it writes a config with N services (two blue addresses and one green each) in one
zone, then measures with the release binary:

  check      `flipdns check` wall time
  start      from spawning `flipdns serve` to its `ready` line
  flip p50/p99/max   acknowledgement latency of 100 `flip --now --force` requests sent on
             the admin socket (one connection, no process per flip), alternating services
  reload     `reload` on the admin socket (the config unchanged), median of the reloads
  rss        VmRSS after start, and after each of 10 reloads (first, last, max)

With SCALE_DELEGATIONS=D the zone also delegates D names (d0 .. d(D-1)), each to a name
server below it (with glue) and to ns1, so a large parent zone is measured too.

Usage (from the repository root, after `cargo build --release`):

  benches/scale/scale.py                    # N = 100, 1000, 10000, 100000
  benches/scale/scale.py 100 10000          # chosen sizes
  FLIPDNS_BIN=path/to/flipdns benches/scale/scale.py

Prints one Markdown table row per N (with SCALE_VERBOSE=1 also the RSS after each reload). Nothing here is a test: the figures go in README's
performance section and the closing notes.
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("FLIPDNS_BIN", os.path.join(ROOT, "target", "release", "flipdns"))

ZONE = """$ORIGIN svc.example.com.
$TTL 3600
@ IN SOA ns1 hostmaster.example.com. 1 7200 900 1209600 60
  IN NS ns1
ns1 IN A 192.0.2.53
"""


def write_config(directory, n):
    delegations = int(os.environ.get("SCALE_DELEGATIONS", "0"))
    with open(os.path.join(directory, "svc.zone"), "w") as f:
        f.write(ZONE)
        for i in range(delegations):
            a, b = divmod(i, 250)
            f.write(f"d{i} IN NS ns.d{i}\nd{i} IN NS ns1\nns.d{i} IN A 10.{a // 250}.{a % 250}.{b + 1}\n")
    lines = [
        "[server]",
        'listen = ["127.0.0.1:0"]',
        f'admin_socket = "{directory}/flipdns.sock"',
        f'state_file = "{directory}/state.json"',
        "[[zone]]",
        'origin = "svc.example.com."',
        'file = "svc.zone"',
    ]
    for i in range(n):
        a, b = divmod(i, 250)
        lines += [
            "[[service]]",
            f'name = "s{i}"',
            f'blue = ["10.{a // 250}.{a % 250}.{b + 1}", "10.100.{a % 250}.{b + 1}"]',
            f'green = ["10.200.{a % 250}.{b + 1}"]',
            'live = "blue"',
            "ttl = 300",
            "cutover_ttl = 5",
            'settle = "1m"',
        ]
    with open(os.path.join(directory, "flipdns.toml"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return os.path.join(directory, "flipdns.toml")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Admin:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.file = self.sock.makefile("rw")

    def call(self, request):
        self.file.write(json.dumps(request) + "\n")
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline())
            if "progress" not in reply:
                return reply


def measure(n):
    with tempfile.TemporaryDirectory(prefix=f"flipdns-scale-{n}-") as directory:
        config = write_config(directory, n)
        started = time.monotonic()
        subprocess.run([BIN, "check", "--config", config], check=True, capture_output=True)
        check = time.monotonic() - started

        started = time.monotonic()
        server = subprocess.Popen(
            [BIN, "serve", "--config", config],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "FLIPDNS_LOG": "info"},
        )
        for line in server.stderr:
            if " ready" in line:
                break
        start = time.monotonic() - started
        # Keep reading the log so the server never blocks on a full pipe.
        import threading

        threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()
        try:
            admin = Admin(os.path.join(directory, "flipdns.sock"))
            rss_start = rss_kb(server.pid)
            flips = []
            for i in range(100):
                service = f"s{(i * 7919) % n}"
                color = "green" if (i // n) % 2 == 0 else "blue"
                request = {
                    "cmd": "flip",
                    "service": service,
                    "to": color,
                    "now": True,
                    "force": True,
                    "wait": False,
                    "wait_secondaries": False,
                }
                t = time.monotonic()
                reply = admin.call(request)
                flips.append((time.monotonic() - t) * 1000)
                if "error" in reply:
                    raise SystemExit(f"flip failed: {reply}")
            flips.sort()
            reloads, rss = [], []
            for _ in range(10):
                t = time.monotonic()
                reply = admin.call({"cmd": "reload"})
                reloads.append(time.monotonic() - t)
                if "error" in reply:
                    raise SystemExit(f"reload failed: {reply}")
                rss.append(rss_kb(server.pid))
        finally:
            server.terminate()
            server.wait()
        return {
            "n": n,
            "check": check,
            "start": start,
            "flip_p50": flips[49],
            "flip_p99": flips[98],
            "flip_max": flips[-1],
            "reload": statistics.median(reloads),
            "rss_start": rss_start / 1024,
            "rss_reload_first": rss[0] / 1024,
            "rss_reload_last": rss[-1] / 1024,
            "rss_reload_max": max(rss) / 1024,
            "rss_reloads": [round(r / 1024) for r in rss],
        }


def main():
    sizes = [int(a) for a in sys.argv[1:]] or [100, 1000, 10000, 100000]
    print("| services | check | start | flip ack p50 / p99 / max | reload | RSS start / after 1 reload / after 10 (max) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n in sizes:
        r = measure(n)
        print(
            f"| {r['n']:,} | {r['check']:.2f} s | {r['start']:.2f} s | "
            f"{r['flip_p50']:.1f} / {r['flip_p99']:.1f} / {r['flip_max']:.1f} ms | {r['reload']:.2f} s | "
            f"{r['rss_start']:.0f} / {r['rss_reload_first']:.0f} / {r['rss_reload_last']:.0f} ({r['rss_reload_max']:.0f}) MB |",
            flush=True,
        )
        if os.environ.get("SCALE_VERBOSE"):
            print(f"RSS after each reload (MB): {r['rss_reloads']}", flush=True)


if __name__ == "__main__":
    main()
