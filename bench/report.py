"""Render the benchmark results as Markdown with PNG charts (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["write_report"]

# Published anchors (ThingsBoard performance page, 2-vCPU instances) to put our own figures next to.
ANCHORS = {
    "ThingsBoard + PostgreSQL (2 vCPU)": 1_000,
    "ThingsBoard + Kafka (2 vCPU, 95% CPU)": 5_000,
}
ANCHOR_LATENCY_MS = 50  # ThingsBoard's reported average processing latency


def _charts(results: dict[str, Any], folder: Path, backends: list[str]) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    # 1. throughput against the anchors
    labels = [
        "Mosquitto alone\n(C clients)",
        "Mosquitto alone\n(Python client)",
        *[f"carealarm\n{b}" for b in backends],
        *[k.replace(" (", "\n(") for k in ANCHORS],
    ]
    values = [
        results["ceiling"]["rate"],
        results["python_ceiling"]["rate"],
        *[results[b]["ingest"]["rate"] for b in backends],
        *ANCHORS.values(),
    ]
    colors = ["#888", "#aaa", *["#2a7" for _ in backends], *["#c84" for _ in ANCHORS]]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    bars = ax.bar(labels, values, color=colors)
    ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=8)
    ax.axhline(10_000, color="red", linestyle="--", linewidth=1, label="goal 10,000/s")
    ax.set_ylabel("messages / s")
    ax.set_title("Sustained durable ingest (QoS 1, stored before ack) vs. anchors")
    ax.legend()
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(folder / "throughput.png", dpi=110)
    plt.close(fig)
    made.append("throughput.png")
    # 2. ingest over time
    fig, ax = plt.subplots(figsize=(9, 3.5))
    for b in backends:
        ax.plot(
            range(1, len(results[b]["ingest"]["per_second"]) + 1), results[b]["ingest"]["per_second"], label=b
        )
    ax.set_xlabel("second of the measurement")
    ax.set_ylabel("events stored and acked / s")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.set_title("Durable ingest, second by second")
    fig.tight_layout()
    fig.savefig(folder / "ingest-series.png", dpi=110)
    plt.close(fig)
    made.append("ingest-series.png")
    # 3. CPU per component during ingest
    fig, axes = plt.subplots(1, len(backends), figsize=(9, 3.8), squeeze=False)
    for ax, b in zip(axes[0], backends, strict=True):
        cpu = results[b]["ingest"]["cpu"]
        names = list(cpu)
        ax.barh(names, [cpu[n]["cpu_pct"] for n in names], color="#47a")
        ax.set_xlabel("CPU % (100 = one core)")
        ax.set_title(f"ingest CPU, {b}")
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(folder / "ingest-cpu.png", dpi=110)
    plt.close(fig)
    made.append("ingest-cpu.png")
    # 4. latency distributions
    fig, ax = plt.subplots(figsize=(9, 4))
    for b in backends:
        for label, name in (
            ("heartbeat_30s", "10k devices @30 s"),
            ("heartbeat_2000", "10k devices, 2,000 hb/s"),
        ):
            raw = sorted(results[b].get(label, {}).get("raw_console_ms", []))
            if raw:
                ax.plot(raw, [(i + 1) / len(raw) for i in range(len(raw))], label=f"{b}, {name}")
    ax.axvline(100, color="red", linestyle="--", linewidth=1, label="goal p99 < 100 ms")
    ax.axvline(ANCHOR_LATENCY_MS, color="#c84", linestyle=":", linewidth=1, label="ThingsBoard avg ~50 ms")
    ax.set_xlabel("alarm PUBLISH to alert on the console WebSocket (ms)")
    ax.set_ylabel("share of alarms")
    ax.legend(fontsize=8)
    ax.set_title("Alarm to console latency (CDF)")
    fig.tight_layout()
    fig.savefig(folder / "latency.png", dpi=110)
    plt.close(fig)
    made.append("latency.png")
    # 5. memory at 10k connections
    fig, ax = plt.subplots(figsize=(9, 3.5))
    width = 0.8 / max(1, len(backends))
    procs = sorted({p for b in backends for p in results[b].get("heartbeat_30s", {}).get("memory", {})})
    for i, b in enumerate(backends):
        mem = results[b].get("heartbeat_30s", {}).get("memory", {})
        ax.bar(
            [x + i * width for x in range(len(procs))],
            [mem.get(p, {}).get("rss_mib", 0) for p in procs],
            width,
            label=b,
        )
    ax.set_xticks([x + width * (len(backends) - 1) / 2 for x in range(len(procs))], procs, fontsize=8)
    ax.set_ylabel("resident memory (MiB)")
    ax.set_title("Memory with the whole fleet connected")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "memory.png", dpi=110)
    plt.close(fig)
    made.append("memory.png")
    return made


def _cpu_table(cpu: dict[str, dict[str, float]]) -> list[str]:
    rows = ["| process | CPU % (100 = one core) | resident MiB |", "|---|---:|---:|"]
    rows += [f"| {name} | {v['cpu_pct']} | {v['rss_mib']} |" for name, v in cpu.items()]
    return rows


def _pct(p: dict[str, Any]) -> str:
    if not p:
        return "—"
    return f"{p['p50']} / {p['p95']} / {p['p99']} (max {p['max']}, n={p['n']})"


def write_report(results: dict[str, Any], folder: Path) -> Path:
    backends = [b for b in ("sqlite", "postgres") if b in results]
    charts = _charts(results, folder, backends)
    m = results["machine"]
    lines = [
        "# carealarm benchmark report",
        "",
        f"Run {results['started']} – {results.get('finished', '?')}. Load averages (1/5/15 min) are "
        "given next to each figure: the machine is shared, so every figure is a lower bound of what it "
        "can do alone.",
        "",
        "## Machine",
        "",
        *[f"- **{k}**: {v}" for k, v in m.items()],
        "",
        "## Mosquitto's own ceiling (the MQTT limit of this machine)",
        "",
        f"- C clients (4 × `mosquitto_pub -l` QoS 1 → broker → `mosquitto_sub` QoS 1): "
        f"**{results['ceiling']['rate']:,} msg/s** ({results['ceiling']['messages']:,} messages in "
        f"{results['ceiling']['seconds']} s; broker CPU "
        f"{results['ceiling']['cpu'].get('mosquitto', {}).get('cpu_pct')} %; "
        f"load {results['ceiling']['load']})",
        f"- the bench's own Python device client ({results['python_ceiling']['clients']} connections, "
        f"{results['python_ceiling']['window']} in flight each, sink `mosquitto_sub`): "
        f"**{results['python_ceiling']['rate']:,} PUBACKs/s** (load {results['python_ceiling']['load']})",
        "",
    ]
    for name in charts[:1]:
        lines += [f"![{name}]({name})", ""]
    for b in backends:
        r = results[b]
        ing = r["ingest"]
        lines += [
            f"## {b}",
            "",
            f"Provisioning {results['args'].get('devices')} devices took {r['provision_s']} s; the whole "
            f"{b} run {r['seconds']} s.",
            "",
            "### Sustained durable ingest",
            "",
            f"{ing['devices']:,} devices each send dose events (QoS 1) one at a time, at most 4/s each (the "
            "gateway limits a device to 5/s), the next as soon as the application ack of the previous one "
            "arrives: the service's saturated, durable rate.",
            "",
            f"- **{ing['rate']:,} events/s** stored and acknowledged (load {ing['load']})",
            f"- sent {ing['sent']:,}, acknowledged {ing['acked']:,}, stored {ing['stored']:,}, "
            f"unacknowledged after the drain {ing['unacked_after_drain']}, **lost {ing['lost']}** "
            f"(resent by devices: {ing['resent']:,})",
            f"- publish → application ack per event (ms, p50/p95/p99): {_pct(ing['ack_latency_ms'])}",
            "",
            *_cpu_table(ing["cpu"]),
            "",
        ]
        for label, title in (
            ("heartbeat_30s", "Alarm latency, whole fleet connected, heartbeats every 30 s"),
            ("heartbeat_2000", "Alarm latency under ~2,000 heartbeats/s (issue 3)"),
        ):
            lat = r.get(label)
            if not lat:
                continue
            if "error" in lat:
                lines += [f"### {title}", "", f"**Not measured: {lat['error']}**", ""]
                if "connections" in lat:
                    lines += [f"- connections held: {lat['connections']:,}", ""]
                continue
            lines += [
                f"### {title}",
                "",
                f"- connections held: **{lat['connections']:,}** (connected in {lat['connect_s']} s, load "
                f"{lat['connect_load']}); heartbeats measured {lat['heartbeats_per_s']}/s",
                "- alarm PUBLISH → alert on the console WebSocket, ms p50/p95/p99: "
                f"**{_pct(lat['console_ms'])}**",
                f"- alarm PUBLISH → application ack (stored), ms p50/p95/p99: **{_pct(lat['stored_ms'])}**",
                f"- alarms without an alert within 10 s: {lat['missed']}; load {lat['load']}",
                "",
                *_cpu_table(lat["cpu"]),
                "",
            ]
        off = r.get("offline")
        if off:
            lines += [
                "### Offline detection",
                "",
                f"Time from the fault to the broker's Will message and to `devices.online = false` in the "
                "database (the gateway writes liveness in batches). "
                f"Waited {off['waited_s']} s; load {off['load']}.",
                "",
                "| case | devices | Will published | Will after (ms, p50/p95/p99) | stored offline "
                "| stored after (ms) |",
                "|---|---:|---:|---|---:|---|",
            ]
            for case, v in off.items():
                if isinstance(v, dict):
                    lines.append(
                        f"| {case} | {v['devices']} | {v['will_published']} | {_pct(v['broker_will_ms'])} | "
                        f"{v['detected']} | {_pct(v['db_offline_ms'])} |"
                    )
            lines.append("")
    for name in charts[1:]:
        lines += [f"![{name}]({name})", ""]
    lines += [
        "## Anchors",
        "",
        "- ThingsBoard's published 2-vCPU figures: 1,000 msg/s with PostgreSQL; 5,000 msg/s with Kafka at "
        "95 % CPU; ~50 ms average latency.",
        "- Mosquitto's own ceiling, measured above in the same run, is the physical MQTT limit here.",
        "",
    ]
    path = folder / "report.md"
    path.write_text("\n".join(lines))
    return path
