"""Render the benchmark results as Markdown with PNG charts (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Callable
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
    for name, draw in _CHARTS:
        fig = draw(plt, results, backends)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        made.append(name)
    return made


def _throughput_chart(plt: Any, results: dict[str, Any], backends: list[str]) -> Any:
    """Throughput against the anchors."""
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
    return fig


def _ingest_series_chart(plt: Any, results: dict[str, Any], backends: list[str]) -> Any:
    """Ingest over time."""
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
    return fig


def _ingest_cpu_chart(plt: Any, results: dict[str, Any], backends: list[str]) -> Any:
    """CPU per component during ingest."""
    fig, axes = plt.subplots(1, len(backends), figsize=(9, 3.8), squeeze=False)
    for ax, b in zip(axes[0], backends, strict=True):
        cpu = results[b]["ingest"]["cpu"]
        names = list(cpu)
        ax.barh(names, [cpu[n]["cpu_pct"] for n in names], color="#47a")
        ax.set_xlabel("CPU % (100 = one core)")
        ax.set_title(f"ingest CPU, {b}")
        ax.tick_params(axis="y", labelsize=8)
    return fig


def _latency_chart(plt: Any, results: dict[str, Any], backends: list[str]) -> Any:
    """Latency distributions."""
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
    return fig


def _memory_chart(plt: Any, results: dict[str, Any], backends: list[str]) -> Any:
    """Memory at 10k connections."""
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
    return fig


# Each chart's file and how to draw it (given pyplot, the results and the backends; returns the figure).
# The first is shown under the Mosquitto ceiling, the others after the backends' sections.
_CHARTS: tuple[tuple[str, Callable[[Any, dict[str, Any], list[str]], Any]], ...] = (
    ("throughput.png", _throughput_chart),
    ("ingest-series.png", _ingest_series_chart),
    ("ingest-cpu.png", _ingest_cpu_chart),
    ("latency.png", _latency_chart),
    ("memory.png", _memory_chart),
)


def _cpu_table(cpu: dict[str, dict[str, float]]) -> list[str]:
    rows = ["| process | CPU % (100 = one core) | resident MiB |", "|---|---:|---:|"]
    rows += [f"| {name} | {v['cpu_pct']} | {v['rss_mib']} |" for name, v in cpu.items()]
    return rows


def _pct(p: dict[str, Any]) -> str:
    if not p:
        return "—"
    return f"{p['p50']} / {p['p95']} / {p['p99']} (max {p['max']}, n={p['n']})"


def write_report(results: dict[str, Any], folder: Path) -> Path:
    backends: list[str] = [b for b in ("sqlite", "postgres") if b in results]
    charts = _charts(results, folder, backends)
    lines = _head(results)
    for name in charts[:1]:
        lines += [f"![{name}]({name})", ""]
    for b in backends:
        lines += _backend_section(b, results[b], results["args"].get("devices"))
    for name in charts[1:]:
        lines += [f"![{name}]({name})", ""]
    lines += _ANCHOR_LINES
    path = folder / "report.md"
    path.write_text("\n".join(lines))
    return path


def _head(results: dict[str, Any]) -> list[str]:
    """The run, the machine and Mosquitto's own ceiling."""
    ceiling, py = results["ceiling"], results["python_ceiling"]
    return [
        "# carealarm benchmark report",
        "",
        f"Run {results['started']} – {results.get('finished', '?')}. Load averages (1/5/15 min) are "
        "given next to each figure: the machine is shared, so every figure is a lower bound of what it "
        "can do alone.",
        "",
        "## Machine",
        "",
        *[f"- **{k}**: {v}" for k, v in results["machine"].items()],
        "",
        "## Mosquitto's own ceiling (the MQTT limit of this machine)",
        "",
        f"- C clients (4 × `mosquitto_pub -l` QoS 1 → broker → `mosquitto_sub` QoS 1): "
        f"**{ceiling['rate']:,} msg/s** ({ceiling['messages']:,} messages in "
        f"{ceiling['seconds']} s; broker CPU "
        f"{ceiling['cpu'].get('mosquitto', {}).get('cpu_pct')} %; "
        f"load {ceiling['load']})",
        f"- the bench's own Python device client ({py['clients']} connections, "
        f"{py['window']} in flight each, sink `mosquitto_sub`): "
        f"**{py['rate']:,} PUBACKs/s** (load {py['load']})",
        "",
    ]


def _backend_section(b: str, r: dict[str, Any], devices: Any) -> list[str]:
    """One backend's figures: ingest, the latency phases that ran, offline detection."""
    ing = r["ingest"]
    lines = [
        f"## {b}",
        "",
        f"Provisioning {devices} devices took {r['provision_s']} s; the whole {b} run {r['seconds']} s.",
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
        if r.get(label):
            lines += _latency_section(title, r[label])
    if r.get("offline"):
        lines += _offline_section(r["offline"])
    return lines


def _latency_section(title: str, lat: dict[str, Any]) -> list[str]:
    """One alarm-latency phase, or why it was not measured."""
    if "error" in lat:
        lines = [f"### {title}", "", f"**Not measured: {lat['error']}**", ""]
        if "connections" in lat:
            lines += [f"- connections held: {lat['connections']:,}", ""]
        return lines
    return [
        f"### {title}",
        "",
        f"- connections held: **{lat['connections']:,}** (connected in {lat['connect_s']} s, load "
        f"{lat['connect_load']}); heartbeats measured {lat['heartbeats_per_s']}/s",
        f"- alarm PUBLISH → alert on the console WebSocket, ms p50/p95/p99: **{_pct(lat['console_ms'])}**",
        f"- alarm PUBLISH → application ack (stored), ms p50/p95/p99: **{_pct(lat['stored_ms'])}**",
        f"- alarms without an alert within 10 s: {lat['missed']}; load {lat['load']}",
        "",
        *_cpu_table(lat["cpu"]),
        "",
    ]


def _offline_section(off: dict[str, Any]) -> list[str]:
    """Offline detection: a row per case."""
    lines = [
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
    return lines


_ANCHOR_LINES = (
    "## Anchors",
    "",
    "- ThingsBoard's published 2-vCPU figures: 1,000 msg/s with PostgreSQL; 5,000 msg/s with Kafka at "
    "95 % CPU; ~50 ms average latency.",
    "- Mosquitto's own ceiling, measured above in the same run, is the physical MQTT limit here.",
    "",
)
