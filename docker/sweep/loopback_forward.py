"""Run a command with TCP forwards from this container's loopback to other services.

    python loopback_forward.py 5432=postgres:5432 [...] -- dask worker ...

`sweep run` gives its Dask workers the storage URL it uses itself, e.g.
postgresql+psycopg2://optuna:...@127.0.0.1:5432/optuna (the port the stack
publishes on the host). Inside a worker container 127.0.0.1 is the container,
so each LOCAL=HOST:PORT pair listens on 127.0.0.1:LOCAL here and relays to
HOST:PORT on the compose network: the same URL works on the host and in the
workers, as with the SSH forwards docs/team.md describes for other machines.
The command's exit code is this process's; SIGTERM/SIGINT are passed on to it.
"""

from __future__ import annotations

import asyncio
import signal
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


def _relay(host: str, port: int):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            print(f"loopback_forward: cannot reach {host}:{port}: {exc}", file=sys.stderr, flush=True)
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    return handle


async def _main(forwards: list[str], command: list[str]) -> int:
    for spec in forwards:
        local, _, target = spec.partition("=")
        host, _, port = target.rpartition(":")
        if not (local.isdigit() and host and port.isdigit()):
            print(f"loopback_forward: expected LOCAL=HOST:PORT, got {spec!r}", file=sys.stderr)
            return 2
        await asyncio.start_server(_relay(host, int(port)), "127.0.0.1", int(local))
    child = await asyncio.create_subprocess_exec(*command)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, child.send_signal, sig)
    return await child.wait()


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--" not in args or args.index("--") == len(args) - 1:
        print("usage: loopback_forward.py LOCAL=HOST:PORT ... -- COMMAND ...", file=sys.stderr)
        sys.exit(2)
    split = args.index("--")
    sys.exit(asyncio.run(_main(args[:split], args[split + 1 :])))
