#!/usr/bin/env python3
"""Open COUNT idle TCP connections to HOST:PORT and hold them open.

Used by bench/proxy/run to measure a proxy's memory per idle connection.
Nothing is ever sent on the connections. Once every connect attempt has
finished it prints one line

    ready established=N failed=M

and then keeps the sockets open until SIGTERM/SIGINT or until --hold seconds
have passed (so a forgotten client never lingers).
"""
import argparse
import asyncio
import signal


async def run(args: argparse.Namespace) -> None:
    # Bounded parallelism: a burst of 10k SYNs would overflow the proxy's
    # listen backlog and stall on SYN retransmits (1 s, 3 s, ...).
    gate = asyncio.Semaphore(args.parallel)
    writers: list[asyncio.StreamWriter] = []
    failed = 0

    async def connect_one() -> None:
        nonlocal failed
        async with gate:
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(args.host, args.port),
                    timeout=args.connect_timeout,
                )
                writers.append(writer)
            except (OSError, asyncio.TimeoutError):
                failed += 1

    await asyncio.gather(*(connect_one() for _ in range(args.count)))
    print(f"ready established={len(writers)} failed={failed}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), timeout=args.hold)
    except asyncio.TimeoutError:
        pass
    for writer in writers:
        writer.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("count", type=int)
    p.add_argument("--parallel", type=int, default=256)
    p.add_argument("--connect-timeout", type=float, default=10.0)
    p.add_argument("--hold", type=float, default=180.0,
                   help="give up and close everything after this many seconds")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
