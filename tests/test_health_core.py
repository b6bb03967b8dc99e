"""The watchdog's judgement of the alarm chain (central/health.py), pure: components' beats and states, the
work waiting in the database and the probe, at a simulated ``now``."""

from __future__ import annotations

from central.health import BACKLOG_MS, STALE_MS, STARTUP_GRACE_MS, Backlog, ProbeView, RunSeen, judge

T0 = 1_800_000_000_000
NOW = T0 + 10 * STARTUP_GRACE_MS
IDLE = Backlog(None, 0, None)
NO_PROBE = ProbeView(interval_ms=0, late_after_ms=0, oldest_pending_sent_ms=None)
GOOD = {"connected": True, "subscribed": True, "store_errors": 0}


def runs(gateway_beat: int = NOW, monitor_beat: int = NOW, **gateway_state: object) -> list[RunSeen]:
    return [
        RunSeen("gateway", "h/1", gateway_beat, {**GOOD, **gateway_state}),
        RunSeen("monitor", "h/1", monitor_beat, {}),
    ]


def codes(health: object) -> list[str]:
    return [p.code for p in health.problems]  # type: ignore[attr-defined]


def test_a_whole_chain_is_ok() -> None:
    """Both components beating, nothing waiting, no probe configured: ok."""
    health = judge(NOW, runs(), IDLE, NO_PROBE, started_ms=T0)
    assert health.ok and codes(health) == []


def test_a_component_whose_beat_is_stale_is_down_and_says_what_that_means() -> None:
    """Three missed beats: the monitor is down, and the text says alarms are not shown."""
    health = judge(NOW, runs(monitor_beat=NOW - STALE_MS - 1), IDLE, NO_PROBE, started_ms=T0)
    assert codes(health) == ["monitor_down"]
    assert "not shown" in health.problems[0].text
    assert judge(NOW, runs(monitor_beat=NOW - STALE_MS), IDLE, NO_PROBE, started_ms=T0).ok


def test_a_component_never_seen_counts_only_after_the_start_up_grace() -> None:
    """Just after central started, a gateway not yet seen is not a problem; later it is."""
    only_monitor = [RunSeen("monitor", "h/1", NOW, {})]
    assert judge(NOW, only_monitor, IDLE, NO_PROBE, started_ms=NOW - 1000).ok
    assert codes(judge(NOW, only_monitor, IDLE, NO_PROBE, started_ms=T0)) == ["gateway_down"]


def test_a_gateway_without_its_broker_or_its_subscriptions_is_a_problem() -> None:
    """Connected is not enough: a gateway the broker refused to subscribe hears nothing."""
    assert codes(judge(NOW, runs(connected=False), IDLE, NO_PROBE, started_ms=T0)) == ["broker_unreachable"]
    refused = judge(
        NOW, runs(subscribed=False, refused="subscription refused: 135"), IDLE, NO_PROBE, started_ms=T0
    )
    assert codes(refused) == ["gateway_not_subscribed"] and "135" in refused.problems[0].text


def test_events_waiting_unhandled_and_overdue_steps_are_problems() -> None:
    """A monitor that beats but does not work: events wait, steps are overdue."""
    backlog = Backlog(NOW - BACKLOG_MS - 1000, 7, NOW - 60_000)
    health = judge(NOW, runs(), backlog, NO_PROBE, started_ms=T0)
    assert codes(health) == ["events_waiting", "steps_overdue"]
    assert "7 device event(s)" in health.problems[0].text
    assert judge(NOW, runs(), Backlog(NOW - 100, 3, NOW - 500), NO_PROBE, started_ms=T0).ok


def test_a_probe_not_back_in_time_breaks_the_chain() -> None:
    """The probe sent 21 s ago is not back (late after 20 s): broken, whatever part broke."""
    late = ProbeView(interval_ms=60_000, late_after_ms=20_000, oldest_pending_sent_ms=NOW - 21_000)
    assert codes(judge(NOW, runs(), IDLE, late, started_ms=T0)) == ["probe_late"]
    on_time = ProbeView(interval_ms=60_000, late_after_ms=20_000, oldest_pending_sent_ms=NOW - 19_000)
    assert judge(NOW, runs(), IDLE, on_time, started_ms=T0).ok
    unsent = ProbeView(60_000, 20_000, None, send_error="no connection to the MQTT broker")
    assert codes(judge(NOW, runs(), IDLE, unsent, started_ms=T0)) == ["probe_not_sent"]


def test_a_monitor_that_beats_but_no_longer_handles_events_is_stuck() -> None:
    """Its heartbeat thread is fine, its event loop has done nothing for 16 s: a problem of its own."""
    stuck = [
        RunSeen("gateway", "h/1", NOW, GOOD),
        RunSeen("monitor", "h/1", NOW, {"loops_ms": {"event handling": NOW - 16_000}}),
    ]
    assert codes(judge(NOW, stuck, IDLE, NO_PROBE, started_ms=T0)) == ["monitor_stuck"]
    working = [
        RunSeen("gateway", "h/1", NOW, GOOD),
        RunSeen("monitor", "h/1", NOW, {"loops_ms": {"event handling": NOW - 900}}),
    ]
    assert judge(NOW, working, IDLE, NO_PROBE, started_ms=T0).ok


def test_a_watcher_of_central_alone_judges_only_that_central_beats() -> None:
    """The monitor's process watches central: a broker problem is central's to report, not a second page."""
    broker_down = runs(connected=False) + [RunSeen("central", "h/2", NOW, {})]
    assert judge(NOW, broker_down, IDLE, NO_PROBE, started_ms=T0, expect=("central",), whole_chain=False).ok
    gone = runs()
    health = judge(NOW, gone, IDLE, NO_PROBE, started_ms=T0, expect=("central",), whole_chain=False)
    assert codes(health) == ["central_down"]
