#!/usr/bin/env python3
"""A TCP relay that gives loopback a round-trip time, for bench/bench.py.

This kernel has no netem, so the simulated hosts' link is a userspace relay:

    relay.py --rtt-ms 100 TARGET_PORT...

listens on 127.0.0.1, one new port per target port, prints `LISTEN TARGET`
for each, then `ready`, and relays until it is terminated. Every chunk read
from one side is written to the other rtt/2 after it was read, in order, and
reading never waits for the writing (no bandwidth cap: what is in flight
waits in a queue, as it would on the wire). End of stream travels the same
way. The connection to the target is opened rtt/2 after the client's, when
the last packet of TCP's handshake would reach a real server. What it does
not simulate: the handshake's first round trip (SYN, SYN-ACK), since the
client's connect() returns at once; every connection therefore costs one
round trip less than on a real link, the same for every tool measured.

Never early: a chunk is written only once the loop's monotonic clock has
passed its due time (checked again after each sleep). Late by the event
loop's wake-up (about a millisecond) and by whatever else the machine runs:
bench.py measures the delay it got and prints it beside the one it asked for.
"""
import argparse
import asyncio
import resource
import sys


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def read_into(reader, queue, delay, loop):
    """Reads until end of stream (or a reset, which ends it too), queueing
    each chunk with the time it is due on the other side; b"" is the end."""
    while True:
        try:
            data = await reader.read(1 << 16)
        except (ConnectionError, OSError):
            data = b""
        queue.put_nowait((loop.time() + delay, data))
        if not data:
            return


async def write_from(queue, writer, loop):
    """Writes each queued chunk once it is due, then ends the stream."""
    while True:
        due, data = await queue.get()
        while loop.time() < due:
            await asyncio.sleep(due - loop.time())
        if writer.transport.is_closing():  # the other side is gone: drop what is in flight
            if not data:
                return
            continue
        if not data:
            if writer.can_write_eof():
                try:
                    writer.write_eof()
                except OSError:
                    pass
            return
        writer.write(data)


async def relay(client_reader, client_writer, target, delay):
    loop = asyncio.get_running_loop()
    upstream = asyncio.Queue()
    reading = asyncio.ensure_future(read_into(client_reader, upstream, delay, loop))
    opened = loop.time() + delay
    while loop.time() < opened:
        await asyncio.sleep(opened - loop.time())
    try:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target)
    except OSError:
        reading.cancel()
        client_writer.close()
        return
    downstream = asyncio.Queue()
    try:
        await asyncio.gather(reading, read_into(server_reader, downstream, delay, loop),
                             write_from(upstream, server_writer, loop), write_from(downstream, client_writer, loop))
    finally:
        server_writer.close()
        client_writer.close()


async def serve(targets, delay):
    servers = []
    for target in targets:
        server = await asyncio.start_server(lambda r, w, t=target: relay(r, w, t, delay), "127.0.0.1", 0,
                                            backlog=4096)
        servers.append(server)
        print("%d %d" % (server.sockets[0].getsockname()[1], target))
    print("ready", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rtt-ms", type=float, required=True, help="round-trip time: rtt/2 each way")
    parser.add_argument("targets", nargs="+", type=int, help="ports on 127.0.0.1 to relay to")
    args = parser.parse_args()
    if args.rtt_ms < 0:
        parser.error("--rtt-ms must not be negative")
    raise_nofile()
    try:
        asyncio.run(serve(args.targets, args.rtt_ms / 2000.0))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
