#!/usr/bin/env python3
"""One round of bench/nats_sink.sh: frames/s into a file-backed R1 JetStream stream, either
through `framehub serve` with a `nats` sink (`serve`) or straight from the reference publisher,
`framehub bench jetstream` (`reference`). Prints one JSON object.

    bench/nats_sink.py serve     FRAMEHUB NATS_URL OUTDIR CONNS FRAMES SIZE TOKEN
    bench/nats_sink.py reference FRAMEHUB NATS_URL OUTDIR CONNS FRAMES SIZE TOKEN [PUBLISHERS]

Both delete their stream first (a fresh stream every round) and after (disk). In both, a poller
asks the server for the stream's message count every POLL_MS (default 5) milliseconds, so that
the server carries the same extra requests in both.

How `serve` is timed (the daemon cannot say when the first frame was sent, and the load
generator cannot see the stream), as bench/serve_e2e.py times the file sink:
- start: the earlier of the moment the stream first holds a message and the generator's exit
  minus its own sending time (`send_secs`); both lie at or after the real start.
- end: the moment the stream reached its final count (no change for QUIET_S seconds).
The daemon runs with the default [nats] and nats sink settings (`[[sink]] type = "nats"`: the
stream FRAMEHUB, created with file storage and one replica) and one listener whose queue
blocks when full (`overflow = "block"`: TCP pushes back on the generator instead of dropping,
so that nothing sent may be missing from the stream).

`reference` runs PUBLISHERS publisher tasks (default 0: one per connection; 1: one task for
every node's frames in turn). It reports the publisher's own figure, first publish to last ack,
and the poller's. Lost frames: sent minus the stream's final count; duplicates would show as a
count above sent. Both report the CPU time each process spent per frame stored (serve, its load
generator, the reference publisher; nats-server when NATS_PID names it).
"""
import asyncio
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time

import nats
from nats.js.errors import NotFoundError

from benchutil import free_port

POLL_MS = float(os.environ.get("POLL_MS", "5"))
QUIET_S = float(os.environ.get("QUIET_S", "5"))
# The nats-server's pid, to count the CPU time it spent on each run.
NATS_PID = os.environ.get("NATS_PID")


def cpu_secs(pid):
    """User + system CPU seconds of a running process, from /proc."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


async def wait_port(port):
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise SystemExit(f"port {port} never opened")


async def delete_stream(js, name):
    try:
        await js.delete_stream(name)
    except NotFoundError:
        pass


class Poller:
    """The stream's message count every POLL_MS, as (time, count) at every change."""

    def __init__(self, js, stream):
        self.js, self.stream = js, stream
        self.growth = []
        self.task = None

    async def count(self):
        try:
            return (await self.js.stream_info(self.stream)).state.messages
        except NotFoundError:
            return None

    async def run(self):
        last = None
        while True:
            n = await self.count()
            if n is not None and n != last:
                self.growth.append((time.monotonic(), n))
                last = n
            await asyncio.sleep(POLL_MS / 1000)

    def start(self):
        self.task = asyncio.create_task(self.run())

    async def settle(self, expected):
        """Waits until the count reached `expected`, or did not change for QUIET_S."""
        while True:
            await asyncio.sleep(0.05)
            last = self.growth[-1] if self.growth else (time.monotonic(), 0)
            if last[1] >= expected or time.monotonic() - last[0] > QUIET_S:
                break
        # A count above `expected` would show a duplicate: look a little longer.
        await asyncio.sleep(0.5)
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        final = self.growth[-1][1] if self.growth else 0
        first = next((t for t, n in self.growth if n > 0), None)
        done = next((t for t, n in self.growth if n == final), None)
        return first, done, final


async def run_bench(*args):
    """Runs `framehub bench ...`: its report, when it exited, the CPU seconds it used."""
    cpu = children_cpu()
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    exited = time.monotonic()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {err.decode()}")
    return json.loads(out), exited, children_cpu() - cpu


async def serve(fh, url, outdir, conns, frames, size, token):
    stream = "FRAMEHUB"
    nc = await nats.connect(url)
    js = nc.jetstream()
    await delete_stream(js, stream)
    port = free_port()
    config = os.path.join(outdir, "nats-sink.toml")
    with open(config, "w") as f:
        f.write(
            f'[nats]\nservers = ["{url}"]\n\n'
            f'[[listener]]\nname = "default"\nbind = "127.0.0.1:{port}"\n'
            '[listener.queue]\noverflow = "block"\n\n'
            '[[sink]]\ntype = "nats"\n')
    log = open(os.path.join(outdir, "serve.log"), "w")
    daemon = subprocess.Popen(
        [fh, "serve", "--config", config, "--token", token, "--no-admin", "--quiet",
         "--log-format", "json"], stderr=log)
    poller = Poller(js, stream)
    try:
        await wait_port(port)
        # The sink creates the stream before the listener opens.
        if await poller.count() is None:
            raise SystemExit("the nats sink did not create the stream FRAMEHUB")
        poller.start()
        nats_cpu, daemon_cpu = cpu_secs(NATS_PID), cpu_secs(daemon.pid)
        sent, exited, bench_cpu = await run_bench(
            fh, "bench", "--to", f"127.0.0.1:{port}", "--token", token, "--conns", conns,
            "--frames", frames, "--size", size, "--json")
        first, done, final = await poller.settle(sent["frames_sent"])
        nats_cpu = cpu_secs(NATS_PID) - nats_cpu
        daemon_cpu = cpu_secs(daemon.pid) - daemon_cpu
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        log.close()
    await delete_stream(js, stream)
    await nc.close()
    start = min(t for t in (first, exited - sent["send_secs"]) if t is not None)
    secs = (done or start) - start
    return {
        "target": "serve",
        "fps": final / secs if secs > 0 else 0.0,
        "secs": secs,
        "stored": final,
        "frames_sent": sent["frames_sent"],
        "lost": sent["frames_sent"] - final,
        "send_secs": sent["send_secs"],
        "daemon_exit": daemon.returncode,
        # CPU time per frame stored: what the load cost each process, whatever else ran.
        "serve_cpu_us": daemon_cpu / max(final, 1) * 1e6,
        "generator_cpu_us": bench_cpu / max(final, 1) * 1e6,
        "nats_cpu_us": nats_cpu / max(final, 1) * 1e6,
    }


async def reference(fh, url, outdir, conns, frames, size, token, publishers="0"):
    stream = "FRAMEHUB_BENCH"
    nc = await nats.connect(url)
    js = nc.jetstream()
    await delete_stream(js, stream)
    poller = Poller(js, stream)
    poller.start()
    host = url.split("//", 1)[1]
    nats_cpu = cpu_secs(NATS_PID)
    report, _, bench_cpu = await run_bench(
        fh, "bench", "jetstream", "--to", host, "--stream", stream, "--conns", conns,
        "--frames", frames, "--size", size, "--publishers", publishers, "--json")
    first, done, final = await poller.settle(report["frames_sent"])
    nats_cpu = cpu_secs(NATS_PID) - nats_cpu
    await delete_stream(js, stream)
    await nc.close()
    polled = (done - first) if first is not None and done is not None else 0
    return {
        "target": "reference",
        "publishers": report["publishers"],
        "fps": report["acked_fps"],
        "secs": report["acked_secs"],
        "polled_fps": final / polled if polled > 0 else None,
        "stored": final,
        "frames_sent": report["frames_sent"],
        "lost": report["frames_sent"] - final,
        "errors": report["errors"],
        "max_acks_in_flight": report["max_acks_in_flight"],
        "publisher_cpu_us": bench_cpu / max(final, 1) * 1e6,
        "nats_cpu_us": nats_cpu / max(final, 1) * 1e6,
    }


def main():
    mode, fh, url, outdir, conns, frames, size, token, *rest = sys.argv[1:]
    os.makedirs(outdir, exist_ok=True)
    run = {"serve": serve, "reference": reference}[mode]
    result = asyncio.run(run(fh, url, outdir, conns, frames, size, token, *rest))
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
