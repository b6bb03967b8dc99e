"""``python -m bench``: run every benchmark, write a Markdown report with PNG charts into a new folder.

    python -m bench [--out bench-report] [--backends sqlite,postgres] [--devices 10000]

``make bench`` runs this with the defaults (under ten minutes on a 2-core machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from devices.simulator.device import SimDevice
from devices.simulator.fleet import raise_fd_limit

from . import experiments as ex
from .harness import Database, Sampler, Services, load_average, machine, provision
from .report import write_report

log = logging.getLogger("bench")

# 60 alarm probes (30 per latency phase: each press is a new alert of its own client, never a repeat),
# 8 dropped with a Will, 6 frozen, 6 dropped without a Will.
_N_PROBES = 80


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench-report"), help="parent folder of the report")
    p.add_argument("--backends", default="sqlite,postgres")
    p.add_argument("--devices", type=int, default=10_000, help="connected fleet for the latency tests")
    p.add_argument("--ingest-devices", type=int, default=3_000, help="devices sending in the ingest test")
    p.add_argument("--ingest-seconds", type=float, default=15.0)
    p.add_argument("--presses", type=int, default=30, help="alarms pressed per latency measurement")
    p.add_argument("--keep-work", action="store_true", help="keep logs and the SQLite files")
    return p.parse_args(argv)


async def _connect_all(devices: list[SimDevice], timeout_s: float = 60) -> None:
    for d in devices:
        d.start()
    deadline = time.monotonic() + timeout_s
    while not all(d.connected for d in devices) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


async def _backend(kind: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    started = time.monotonic()
    db = Database.create(kind, work / kind)
    fleet, probes = provision(db, args.devices, _N_PROBES)
    out["provision_s"] = round(time.monotonic() - started, 1)
    services = Services(db, work / kind)
    broker = services.start_broker()
    services.start()
    dev_broker = ex.MqttConfig(broker.host, broker.port)
    alive: list[SimDevice] = []
    try:
        # Signed in before any load: under load a sign-in can take longer than the measurement itself.
        cookie = services.sign_in()
        print(f"[{kind}] durable ingest with {args.ingest_devices} devices ...", flush=True)
        out["ingest"] = await ex.ingest(
            db, services, broker, fleet[: args.ingest_devices], args.ingest_seconds
        )
        print(f"[{kind}]   {out['ingest']['rate']:,} events/s, lost {out['ingest']['lost']}", flush=True)

        alarm_probes = [SimDevice(c, dev_broker) for c in probes[:60]]
        with_will = [SimDevice(c, dev_broker) for c in probes[60:68]]
        frozen = [SimDevice(c, dev_broker, keepalive_s=10) for c in probes[68:74]]
        alive = alarm_probes + with_will + frozen
        await _connect_all(alive)

        phases = (
            (30.0, "heartbeat_30s", alarm_probes[:30]),
            (args.devices / 2000, "heartbeat_2000", alarm_probes[30:]),
        )
        for heartbeat_s, label, pressing in phases:
            print(f"[{kind}] {args.devices:,} devices, heartbeat every {heartbeat_s:g} s ...", flush=True)
            ex.start_fleet(services, broker, fleet, heartbeat_s)
            load = load_average()
            count, secs = await ex.wait_connected(broker.port, args.devices + len(alive))
            await asyncio.sleep(6)  # past the connect ramp: heartbeats at their steady rate
            rss = Sampler(services.pids())
            rss.start()
            await asyncio.sleep(1)
            memory = rss.stop()
            try:
                result = await ex.alarm_latency(services, cookie, pressing, args.presses)
            except Exception as exc:  # one failed measurement must not lose the others
                result = {"error": f"{exc.__class__.__name__}: {exc}"[:300]}
                print(f"[{kind}]   FAILED: {result['error']}", flush=True)
            result |= {
                "connections": count,
                "connect_s": round(secs, 1),
                "connect_load": load,
                "memory": memory,
                "heartbeats_per_s": ex.heartbeat_rate(services),
            }
            out[label] = result
            c = result.get("console_ms", {})
            print(
                f"[{kind}]   {count:,} connections; alarm to console "
                f"p50 {c.get('p50')} p99 {c.get('p99')} ms; "
                f"stored p99 {result.get('stored_ms', {}).get('p99')} ms",
                flush=True,
            )
            if label == "heartbeat_30s":
                services.stop_process("simulator", timeout_s=60)

        print(f"[{kind}] offline detection ...", flush=True)
        try:
            out["offline"] = await ex.offline_detection(
                db, broker, work / kind, with_will, frozen, probes[74:80], wait_s=20.0
            )
        except Exception as exc:
            out["offline_error"] = f"{exc.__class__.__name__}: {exc}"[:300]
            print(f"[{kind}]   FAILED: {out['offline_error']}", flush=True)
    finally:
        await asyncio.gather(*(d.stop(graceful=False) for d in alive), return_exceptions=True)
        services.stop()
        db.drop()
    out["seconds"] = round(time.monotonic() - started)
    return out


async def _main(args: argparse.Namespace) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = args.out / stamp
    work = folder / "work"
    work.mkdir(parents=True)
    raise_fd_limit(1_000_000)  # up to the hard limit; the broker and the simulator inherit it
    results: dict[str, Any] = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    results["args"] = {k: str(v) for k, v in vars(args).items()}
    print("Mosquitto's own ceiling ...", flush=True)
    results["ceiling"] = ex.mosquitto_ceiling(work / "ceiling")
    results["python_ceiling"] = await ex.python_ceiling(work / "ceiling")
    print(
        f"  C clients: {results['ceiling']['rate']:,} msg/s; "
        f"Python client: {results['python_ceiling']['rate']:,} msg/s",
        flush=True,
    )
    for kind in args.backends.split(","):
        results[kind] = await _backend(kind, args, work)
        (folder / "results.json").write_text(json.dumps(results, indent=1))
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    (folder / "results.json").write_text(json.dumps(results, indent=1))
    write_report(results, folder)
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return folder


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _args(argv)
    started = time.monotonic()
    folder = asyncio.run(_main(args))
    print(f"bench: report written to {folder / 'report.md'} ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
