#!/usr/bin/env python3
"""A TCP proxy that delays every chunk of data, in each direction, by
DELAY_MS +- JITTER_MS (order preserved), for tests on kernels without tc netem.

    delay_proxy.py LISTEN_HOST LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT DELAY_MS JITTER_MS

Runs until killed. Only for the project's own test namespaces / loopback."""
import asyncio
import random
import sys


async def pump(reader, writer, delay, jitter):
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def sender():
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    task = asyncio.create_task(sender())
    last = 0.0
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            # Never earlier than the previous chunk: a stream stays in order.
            last = max(last, loop.time() + (delay + random.uniform(-jitter, jitter)) / 1000.0)
            await queue.put((last, data))
    except (ConnectionError, asyncio.CancelledError):
        pass
    await queue.put((0, None))
    await task


async def main():
    lhost, lport, uhost, uport, delay, jitter = sys.argv[1:7]
    delay, jitter = float(delay), float(jitter)

    async def handle(creader, cwriter):
        print("delay_proxy: connection from %s:%d" % cwriter.get_extra_info("peername")[:2],
              file=sys.stderr, flush=True)
        try:
            ureader, uwriter = await asyncio.open_connection(uhost, int(uport))
        except OSError:
            cwriter.close()
            return
        await asyncio.gather(pump(creader, uwriter, delay, jitter), pump(ureader, cwriter, delay, jitter),
                             return_exceptions=True)

    server = await asyncio.start_server(handle, lhost, int(lport))
    async with server:
        await server.serve_forever()


asyncio.run(main())
