"""``python -m bench.profile``: the durable-ingest load while py-spy samples the gateway and the monitor.

    python -m bench.profile --backend sqlite --devices 3000 --seconds 15 --out bench-report/profile

Writes ``<component>.txt`` (py-spy's top functions, --format raw collapsed stacks) into ``--out``: the
evidence of where the service spends its time under load. Needs ``pip install py-spy`` and ptrace rights.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
from pathlib import Path

from devices.simulator.fleet import raise_fd_limit

from . import experiments as ex
from .harness import Database, Services, provision


def _top(collapsed: Path, n: int = 25) -> list[str]:
    """Own time and total time per function from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        k = int(count)
        samples += k
        frames = stack.split(";")
        own[frames[-1]] += k
        for f in set(frames):
            total[f] += k
    out = [f"samples: {samples}", "", "own time:"]
    out += [f"{100 * c / samples:5.1f}%  {f}" for f, c in own.most_common(n)]
    out += ["", "total time (inclusive):"]
    out += [f"{100 * c / samples:5.1f}%  {f}" for f, c in total.most_common(n)]
    return out


async def _run(args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work"
    db = Database.create(args.backend, work)
    fleet, _ = provision(db, args.devices, 0)
    services = Services(db, work)
    broker = services.start_broker()
    services.start(("gateway", "monitor"))
    spies = []
    try:
        pids = services.pids()
        for name in ("gateway", "monitor"):
            spies.append(
                (
                    name,
                    subprocess.Popen(
                        [
                            shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy")),
                            "record",
                            "--pid",
                            str(pids[name]),
                            "--format",
                            "raw",
                            "--duration",
                            str(int(args.seconds + 10)),
                            "--output",
                            str(args.out / f"{name}.collapsed"),
                            "--threads",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    ),
                )
            )
        result = await ex.ingest(db, services, broker, fleet, args.seconds)
        print(f"{args.backend}: {result['rate']:,} events/s, lost {result['lost']}, cpu {result['cpu']}")
        for name, spy in spies:
            spy.wait(timeout=120)
            collapsed = args.out / f"{name}.collapsed"
            if collapsed.exists():
                (args.out / f"{name}.txt").write_text("\n".join(_top(collapsed)) + "\n")
                print(f"{name}: {args.out / (name + '.txt')}")
    finally:
        for _name, spy in spies:
            if spy.poll() is None:
                spy.terminate()
                spy.wait()
        services.stop()
        db.drop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile")
    p.add_argument("--backend", default="sqlite", choices=("sqlite", "postgres"))
    p.add_argument("--devices", type=int, default=3000)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--out", type=Path, default=Path("bench-report/profile"))
    args = p.parse_args()
    raise_fd_limit(1_000_000)
    asyncio.run(_run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
