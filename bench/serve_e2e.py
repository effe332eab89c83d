#!/usr/bin/env python3
"""`framehub serve` end to end, as a user gets it: from the first frame sent to the last record
written into a file on a real disk and synced, wall clock, with the default config (no config
file: drop-oldest queues, fsync = "interval"), and the frames that never reached the file.

    bench/serve_e2e.py FRAMEHUB OUTDIR CONNS FRAMES SIZE TOKEN > result.json

How it is timed (the daemon cannot say when the first frame was sent, and the load generator
cannot see the file):
- start: the earlier of (a) the moment the file first grows, seen by polling its size every
  millisecond (the first record, a fraction of a millisecond after the first frame), and
  (b) the generator's exit minus its own sending time (`send_secs`). Both lie at or after the
  real start, so the earlier is the closer.
- written: the moment the file reached its final size (polled every millisecond; final = no
  growth for 2 s after the generator exited).
- synced: written + the time an fsync of the file takes right after it stopped growing for
  50 ms (what is still unsynced then is what the daemon's 1 s interval had not yet synced).
The file is on OUTDIR's file system, which must be a disk (not tmpfs). With SERVE_CONFIG set,
the daemon also reads that config file (the command-line flags above still apply). With
FORMAT=frame the file sink writes frames alone (`format = "frame"`) instead of records: the
file is then a `[[sink]]` of a config file this script writes (SERVE_CONFIG's text first).

The file write ceiling: right after the run, the same number of bytes (the records file's own
first 4 MiB, over and over) is written into a new file beside it with 4 MiB writes, synced by
another thread every second and once at the end as the daemon's default sink does, and timed
(`ceiling_secs`, the faster of two such writes): what one writer gets from this file system at that moment,
the limit of any single-file sink. On this 2-core VM it moves between ~0.6 and ~4 GB/s from one
minute to the next (the host's page allocation), hence measured in every round, not once.

Since issue 14 the default config's queues block when a file sink is configured (TCP pushes
back on the senders), so `drops` should be 0; it is still measured, not assumed.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from benchutil import free_port


def write_ceiling(path, nbytes):
    """Seconds to write `nbytes` (the head of `path`, repeated) into a new file beside `path` in
    4 MiB writes, synced as the daemon's default file sink syncs: by another thread every
    second while writing (`fsync = "interval"`), then once at the end."""
    with open(path, "rb") as f:
        block = f.read(4 << 20)
    other = path + ".ceiling"
    fd = os.open(other, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    done = threading.Event()

    def sync():
        while not done.wait(1.0):
            os.fsync(fd)

    syncer = threading.Thread(target=sync, daemon=True)
    try:
        t = time.monotonic()
        syncer.start()
        left = nbytes
        while left > 0:
            left -= os.write(fd, block[:left])
        done.set()
        syncer.join()
        os.fsync(fd)
        return time.monotonic() - t
    finally:
        done.set()
        os.close(fd)
        os.remove(other)


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} never opened")


def main():
    fh, outdir, conns, frames, size, token = sys.argv[1:7]
    os.makedirs(outdir, exist_ok=True)
    fstype = subprocess.run(["stat", "-f", "-c", "%T", outdir], capture_output=True, text=True).stdout.strip()
    if fstype in ("tmpfs", "ramfs"):
        raise SystemExit(f"{outdir} is on {fstype}, not a disk")
    path = os.path.join(outdir, "serve-e2e.ndjson")
    if os.path.exists(path):
        os.remove(path)
    port = free_port()
    log = open(os.path.join(outdir, "serve-e2e.log"), "w")
    config = ["--config", os.environ["SERVE_CONFIG"]] if os.environ.get("SERVE_CONFIG") else []
    out = ["--out", path]
    if os.environ.get("FORMAT", "record") != "record":
        text = open(os.environ["SERVE_CONFIG"]).read() if config else ""
        text += f'\n[[sink]]\ntype = "file"\nname = "out"\npath = "{path}"\nformat = "{os.environ["FORMAT"]}"\n'
        cfg = os.path.join(outdir, "serve-e2e.toml")
        with open(cfg, "w") as f:
            f.write(text)
        config, out = ["--config", cfg], []
    serve = subprocess.Popen(
        [fh, "serve", *config, "--listen", f"127.0.0.1:{port}", "--token", token, *out,
         "--no-admin", "--quiet", "--log-format", "json"],
        stderr=log)
    try:
        wait_port(port)
        growth = []  # (time, size) at every change
        stop = threading.Event()

        def poll():
            last = -1
            while not stop.is_set():
                try:
                    n = os.stat(path).st_size
                except FileNotFoundError:
                    n = 0
                if n != last:
                    growth.append((time.monotonic(), n))
                    last = n
                time.sleep(0.001)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        bench = subprocess.run(
            [fh, "bench", "--to", f"127.0.0.1:{port}", "--token", token, "--conns", conns,
             "--frames", frames, "--size", size, "--json"],
            capture_output=True, text=True, check=True)
        exited = time.monotonic()
        sent = json.loads(bench.stdout)
        # Quiet for 50 ms: sync what the daemon has not; then wait for 2 s of quiet in all.
        while time.monotonic() - growth[-1][0] < 0.05:
            time.sleep(0.01)
        fd = os.open(path, os.O_RDONLY)
        t = time.monotonic()
        os.fsync(fd)
        fsync_secs = time.monotonic() - t
        os.close(fd)
        while time.monotonic() - growth[-1][0] < 2.0:
            time.sleep(0.05)
        stop.set()
        poller.join()
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=30)
        log.close()
    first_growth = next(t for t, n in growth if n > 0)
    start = min(first_growth, exited - sent["send_secs"])
    final = growth[-1][1]
    written_at = next(t for t, n in growth if n == final)
    with open(path, "rb") as f:
        records = sum(1 for _ in f)
    stopped = {}
    for line in open(os.path.join(outdir, "serve-e2e.log")):
        try:
            v = json.loads(line)
        except ValueError:
            continue
        if v.get("fields", {}).get("message", "").startswith("stopped"):
            stopped = v["fields"]
    secs = written_at - start + fsync_secs
    # Twice, the faster counting: one write of 1-2 GB moves a lot with the VM's state.
    ceiling_secs = min(write_ceiling(path, final), write_ceiling(path, final))
    json.dump({
        "delivered_fps": records / secs,
        "written": records,
        "drops": sent["frames_sent"] - records,
        "hub_dropped": stopped.get("dropped"),
        "e2e_secs": secs,
        "written_secs": written_at - start,
        "fsync_secs": fsync_secs,
        "send_secs": sent["send_secs"],
        "sink_busy_secs": stopped.get("write_secs"),
        "file_bytes": final,
        "ceiling_secs": ceiling_secs,
        "fs": fstype,
        "conns": sent["conns"],
        "size": sent["size"],
        "frames_sent": sent["frames_sent"],
    }, sys.stdout)
    os.remove(path)


if __name__ == "__main__":
    main()
