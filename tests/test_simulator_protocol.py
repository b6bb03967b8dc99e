"""The simulator speaks the whole protocol: the care-day plan (pure) and devices answering commands (broker).

The plan tests read the timeline of scenario care-day for a fleet shaped like the demo's; the broker tests
run simulated devices against the embedded Mosquitto with a test client in the service's place.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from carealarm.broker import EmbeddedBroker
from devices.simulator import careday
from devices.simulator.commands import Response, readable_cmd_id, respond
from devices.simulator.device import Credentials, SimDevice
from devices.simulator.fleet import _DO, plan_actions, resolve_scenario, run_fleet
from devices.simulator.mqtt import ConnectRefused, MqttClient
from devices.simulator.scenarios import SCENARIOS, Action, after_the_plan, timeline
from messaging.accounts import mosquitto_hash
from messaging.mqtt import MqttConfig
from protocol.v1 import (
    Command,
    CommandAck,
    DispenserEvent,
    Fault,
    Heartbeat,
    ScheduleReport,
    decode,
    decode_command,
    encode_command,
)

ROOT = "carealarm/v1/devices"
CLIENTS = ("Jansen", "de Boer", "Smit", "Mulder", "Bos", "Meijer")


def demo_fleet() -> list[Credentials]:
    """The demo fleet (carealarm/demo.py) in fleet.json order: six buttons, four dispensers, three tablets."""
    creds = [Credentials(f"btn-{i:03d}", "pw", "alarm_button", CLIENTS[i - 1]) for i in range(1, 7)]
    creds += [Credentials(f"med-{i:03d}", "pw", "dispenser", CLIENTS[i - 1]) for i in (1, 2, 4, 6)]
    creds += [Credentials(f"tv-{i:03d}", "pw", "video", CLIENTS[i - 1]) for i in (1, 2, 3)]
    return creds


CARE_DAY = SCENARIOS["care-day"]
FLEET = demo_fleet()


def day(seed: int = 1, compression: float | None = None) -> list[Action]:
    scenario = resolve_scenario("care-day", compression=compression)
    return list(plan_actions(scenario, FLEET, seed, tag="d"))


def of_case(actions: list[Action], case: str) -> list[Action]:
    return [a for a in actions if case in a.case.split(",")]


def client_of(device: int) -> str:
    return FLEET[device].client_name


# -- the plan (pure) -------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [1, 2, 3, 17])
def test_care_day_plays_every_case(seed: int) -> None:
    """Every case of careday.CASES has actions, whatever the seed."""
    actions = day(seed)
    assert {c.key for c in careday.CASES} == {case for a in actions for case in a.case.split(",") if case}


def test_care_day_is_repeatable_and_the_seed_changes_it() -> None:
    """The same seed gives the same day; another seed another one."""
    assert day(1) == day(1)
    assert day(1) != day(2)


def test_care_day_is_in_time_order_and_ends() -> None:
    """The plan is finite, sorted, and takes a few minutes at the scenario's compression (240x)."""
    actions = day(1)
    times = [a.at_s for a in actions]
    assert times == sorted(times)
    assert CARE_DAY.compression == 240.0
    assert 240 < times[-1] < 300


def test_compression_stretches_the_day() -> None:
    """Half the compression, twice the run time from the start of the day (where no floor applies)."""
    fast = of_case(day(1, compression=240), "alarm")[0]
    slow = of_case(day(1, compression=120), "alarm")[0]
    assert slow.at_s - careday.LEAD_S == pytest.approx(2 * (fast.at_s - careday.LEAD_S), abs=0.2)
    assert careday.day_clock(CARE_DAY, fast.at_s) == careday.day_clock(
        dataclasses.replace(CARE_DAY, compression=120), slow.at_s
    )


def test_day_clock_maps_run_seconds_to_the_day() -> None:
    """The day starts at 07:00 after the lead-in; one run second is four minutes at 240x."""
    assert careday.day_clock(CARE_DAY, careday.LEAD_S) == "07:00"
    assert careday.day_clock(CARE_DAY, careday.LEAD_S + 15) == "08:00"
    assert careday.day_clock(CARE_DAY, careday.LEAD_S + 240) == "23:00"


def test_second_alarm_is_a_fall_from_the_same_button_a_minute_later_at_least() -> None:
    """The second alarm comes from the first alarm's device, as a fall, at least 60 run seconds later."""
    for seed in (1, 2, 3):
        actions = day(seed)
        (first,) = of_case(actions, "alarm")
        (second,) = of_case(actions, "second-alarm")
        assert (first.what, first.arg) == ("alarm", "button")
        assert (second.what, second.arg, second.device) == ("alarm", "fall", first.device)
        assert second.at_s - first.at_s >= careday.SECOND_ALARM_FLOOR_S


def test_button_goes_offline_while_its_clients_tablet_heartbeats() -> None:
    """The button drops (Last Will) and is back later; its client's tablet heartbeats meanwhile."""
    actions = day(1)
    drop = next(a for a in of_case(actions, "button-offline") if a.what == "drop")
    back = next(a for a in of_case(actions, "button-offline") if a.what == "back")
    assert FLEET[drop.device].kind == "alarm_button" and back.device == drop.device
    assert back.at_s == pytest.approx(drop.at_s + drop.duration_s)
    tablet_beats = [
        a
        for a in actions
        if a.what == "heartbeat"
        and FLEET[a.device].kind == "video"
        and client_of(a.device) == client_of(drop.device)
        and drop.at_s < a.at_s < back.at_s
    ]
    assert len(tablet_beats) >= 2
    assert all(a.case == "button-offline" for a in tablet_beats)


def _doses(actions: list[Action], device: int, dose_id: str) -> list[str]:
    return [a.what for a in actions if a.device == device and a.arg == dose_id and a.what.startswith("dose_")]


def test_missed_dose_is_reported_missed_and_never_taken() -> None:
    """The missed dose: due, then missed after the grace, and no taken ever."""
    actions = day(1)
    due = next(a for a in of_case(actions, "missed-dose") if a.what == "dose_due")
    assert _doses(actions, due.device, due.arg) == ["dose_due", "dose_missed"]
    missed = next(a for a in of_case(actions, "missed-dose") if a.what == "dose_missed")
    assert careday.day_clock(CARE_DAY, missed.at_s) >= "18:44"  # 18:00 + 45 min grace, to the minute


def test_late_dose_is_taken_after_it_was_reported_missed() -> None:
    """The late dose: due, missed at the grace, then taken (a few seconds at least after the miss)."""
    actions = day(1)
    case = [a for a in of_case(actions, "late-dose") if a.what.startswith("dose_")]
    assert [a.what for a in case] == ["dose_due", "dose_missed", "dose_taken"]
    assert case[2].at_s - case[1].at_s >= careday.LATE_AFTER_MISS_FLOOR_S
    assert _doses(actions, case[0].device, case[0].arg) == ["dose_due", "dose_missed", "dose_taken"]


def test_two_doses_of_one_client_one_taken_late_one_stays_missed() -> None:
    """Two doses of one dispenser are missed; the later one is taken late, the earlier never."""
    actions = day(1)
    case = of_case(actions, "two-doses")
    assert len({a.device for a in case}) == 1
    device = case[0].device
    first, second = sorted({a.arg for a in case}, key=lambda d: d.split("-")[1])
    assert _doses(actions, device, first) == ["dose_due", "dose_missed"]
    assert _doses(actions, device, second) == ["dose_due", "dose_missed", "dose_taken"]
    # Both misses are open at once before the late one is taken.
    missed_first = next(a.at_s for a in case if a.arg == first and a.what == "dose_missed")
    taken_second = next(a.at_s for a in case if a.arg == second and a.what == "dose_taken")
    assert missed_first < taken_second


def test_msg_id_reset_comes_after_an_alarm_of_the_same_button() -> None:
    """The button first raises an ordinary alarm, later one under its reused msg_id, of another kind."""
    actions = day(1)
    used, reused = of_case(actions, "msg-id-reset")
    assert (used.what, reused.what) == ("alarm", "alarm_reused_id")
    assert used.device == reused.device and used.arg != reused.arg
    assert reused.at_s - used.at_s >= careday.REUSE_FLOOR_S


def test_low_battery_device_stays_low_while_its_sibling_is_healthy() -> None:
    """Once low, the device reports a low battery to the end (no flapping from the device's side); the
    client's other device reports a healthy one throughout."""
    actions = day(1)
    low_mark, healthy_mark = of_case(actions, "low-battery")
    assert client_of(low_mark.device) == client_of(healthy_mark.device) != ""
    assert low_mark.device != healthy_mark.device and low_mark.value <= careday.LOW_BATTERY_PCT
    low = [a.value for a in actions if a.what == "heartbeat" and a.device == low_mark.device]
    after = low[low.index(low_mark.value) :]
    assert len(after) >= 5 and all(v <= careday.LOW_BATTERY_PCT for v in after)
    healthy = [a.value for a in actions if a.what == "heartbeat" and a.device == healthy_mark.device]
    assert min(healthy) > careday.LOW_BATTERY_PCT + 10  # above the service's margin for "battery ok"


def test_stock_runs_low_with_doses_left_counting_down() -> None:
    """A dispenser reports stock_low with doses_left at its warning level, then one fewer."""
    reports = [a for a in of_case(day(1), "stock-low") if a.what == "stock_low"]
    assert [a.value for a in reports] == [careday.STOCK_LOW_AT, careday.STOCK_LOW_AT - 1]
    assert FLEET[reports[0].device].kind == "dispenser"


def test_power_is_lost_then_restored() -> None:
    """A dispenser reports power_lost, later power_restored; its battery dips meanwhile, then recovers."""
    actions = day(1)
    lost, restored = of_case(actions, "power")
    assert (lost.arg, restored.arg) == ("power_lost", "power_restored") and lost.device == restored.device
    assert restored.at_s - lost.at_s >= careday.POWER_CUT_FLOOR_S
    beats = [a for a in actions if a.what == "heartbeat" and a.device == lost.device]
    assert all(a.value == 100 for a in beats if a.at_s < lost.at_s)
    assert any(a.value < 100 for a in beats if lost.at_s < a.at_s <= restored.at_s)


def test_every_device_heartbeats_all_day_tablets_included() -> None:
    """Every device, video tablets included, heartbeats every ~30 s from the start to the end."""
    actions = day(1)
    end = actions[-1].at_s
    for i, creds in enumerate(FLEET):
        beats = [a.at_s for a in actions if a.what == "heartbeat" and a.device == i]
        assert beats[0] < 5 and end - beats[-1] <= 33, creds.device_id
        assert max(b - a for a, b in zip(beats, beats[1:], strict=False)) <= 33, creds.device_id


def test_after_the_day_every_device_goes_on_heartbeating_as_it_last_did() -> None:
    """After the plan the devices keep heartbeating (nothing else) with their last battery, so the console
    stays as the day left it instead of filling with offline alerts."""
    actions = day(1)
    after = list(itertools.islice(after_the_plan(actions, CARE_DAY.heartbeat_s), 5 * len(FLEET)))
    assert {a.what for a in after} == {"heartbeat"} and {a.device for a in after} == set(range(len(FLEET)))
    assert [a.at_s for a in after] == sorted(a.at_s for a in after) and after[0].at_s > actions[-1].at_s - 33
    last = {a.device: a.value for a in actions if a.what == "heartbeat"}
    assert all(a.value == last[a.device] for a in after)


def test_care_day_refuses_a_fleet_without_what_a_case_needs() -> None:
    """A fleet of buttons alone cannot play care-day: the error says what is missing."""
    buttons = [Credentials(f"b{i}", "pw", "alarm_button", f"c{i}") for i in range(3)]
    with pytest.raises(ValueError, match="video tablet"):
        plan_actions(CARE_DAY, buttons, 1)


def test_compression_is_refused_for_a_real_time_scenario() -> None:
    """--compress means nothing to the rate scenarios, and a rate timeline refuses a scripted scenario."""
    with pytest.raises(ValueError, match="real time"):
        resolve_scenario("demo", compression=10)
    with pytest.raises(ValueError, match="scripted"):
        timeline(CARE_DAY, ["alarm_button"], 1)


def test_the_fleet_can_play_every_action_of_every_scenario() -> None:
    """Each kind of action a plan uses has a handler in the fleet runner."""
    kinds = [c.kind for c in FLEET]
    whats = {a.what for a in day(1)}
    for scenario in SCENARIOS.values():
        if scenario.script is None:
            stream = timeline(scenario, kinds, 1)
            whats |= {next(stream).what for _ in range(2000)}
    assert whats <= set(_DO)
    assert {"heartbeat", "alarm", "alarm_reused_id", "drop", "back", "stock_low", "fault"} <= whats


# -- answering commands (pure) ----------------------------------------------------------------------
def _command(command: str, **args: Any) -> Command:
    return decode_command(encode_command(Command("cmd-1", 1, command, tuple(sorted(args.items())))))


def test_dispenser_carries_out_remind_and_set_schedule() -> None:
    """A dispenser answers remind with done, and set_schedule with done and the schedule to hold."""
    assert respond("dispenser", _command("remind", dose_id="morning")) == Response("done")
    answer = respond(
        "dispenser",
        _command("set_schedule", version=8, doses=[{"dose_id": "m", "at": "08:30", "label": "x"}]),
    )
    assert answer is not None and answer.result == "done" and answer.schedule is not None
    assert answer.schedule.version == 8 and [d.at for d in answer.schedule.doses] == ["08:30"]


def test_other_devices_refuse_what_they_cannot_do_and_leave_rings_to_the_tablet() -> None:
    """A button refuses a remind (with a reason); a ring on a tablet is the video endpoint's to answer."""
    refused = respond("alarm_button", _command("remind", dose_id="morning"))
    assert refused is not None and refused.result == "refused" and refused.reason
    assert respond("video", _command("ring", call_id="c1", caller="Nurse")) is None
    assert respond("dispenser", _command("set_heartbeat", interval_s=60)).result == "refused"  # type: ignore[union-attr]


def test_an_invalid_command_can_be_refused_when_its_cmd_id_is_readable() -> None:
    """The cmd_id of a command that fails validation is still read, so the device can refuse it."""
    assert readable_cmd_id(b'{"cmd_id":"c-9","command":"dance","args":{}}') == "c-9"
    assert readable_cmd_id(b'{"cmd_id":"bad id!","command":"remind"}') is None
    assert readable_cmd_id(b"not json") is None


# -- on the broker ----------------------------------------------------------------------------------
async def _until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Wait for a condition (a bound for a broken run, never a performance assertion)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def _run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


class Service:
    """The service's side of the broker: sees what devices publish, sends commands and acks."""

    def __init__(self, broker: EmbeddedBroker) -> None:
        self.cfg = MqttConfig.from_url(broker.url)
        self.got: list[tuple[str, bytes]] = []
        self.client = MqttClient(
            "test-service",
            username=self.cfg.username,
            password=self.cfg.password,
            on_message=self._on_message,
        )

    def _on_message(self, topic: str, payload: bytes, _qos: int, _retain: bool) -> None:
        self.got.append((topic, payload))
        kind = topic.rsplit("/", 1)[1]
        if kind in ("alarm", "dose", "dispenser", "schedule", "fault", "cmdack"):
            # Ack every event as the gateway would, so the devices stop resending.
            ack = json.dumps({"msg_id": json.loads(payload)["msg_id"], "status": "accepted"}).encode()
            self.client.publish(topic.rsplit("/", 1)[0] + "/ack", ack, qos=1)

    async def start(self) -> None:
        await self.client.connect(self.cfg.host, self.cfg.port)
        await self.client.subscribe([(f"{ROOT}/+/+", 1)])

    def messages(self, device_id: str, kind: str) -> list[Any]:
        """Every message ``device_id`` published on ``kind``, decoded by the protocol codec (so valid)."""
        topic = f"{ROOT}/{device_id}/{kind}"
        return [decode(t, p) for t, p in self.got if t == topic]

    def command(self, device_id: str, cmd_id: str, command: str, **args: Any) -> None:
        payload = encode_command(Command(cmd_id, 1, command, tuple(sorted(args.items()))))
        self.client.publish(f"{ROOT}/{device_id}/cmd", payload, qos=1)

    def online(self, device_id: str) -> bool:
        return (f"{ROOT}/{device_id}/status", b"online") in self.got


async def _registered(broker: EmbeddedBroker, creds: list[Credentials]) -> None:
    """Register the devices and wait until the broker has re-read its password file (SIGHUP is async)."""
    broker.reload([(c.device_id, mosquitto_hash(c.password)) for c in creds])
    probe = creds[0]
    for _ in range(100):
        client = MqttClient(f"{probe.device_id}-probe", username=probe.device_id, password=probe.password)
        try:
            await client.connect("127.0.0.1", broker.port)
        except ConnectRefused:
            await asyncio.sleep(0.1)
            continue
        await client.disconnect()
        return
    raise AssertionError("the broker never accepted the devices")


TABLET = Credentials("tv-t1", "pw-tablet-secret", "video", "Client T")
DISPENSER = Credentials("med-t1", "pw-dispenser-secret", "dispenser", "Client T")
BUTTON = Credentials("btn-t1", "pw-button-secret", "alarm_button", "Client T")


def test_video_tablets_heartbeat_in_the_fleet(embedded_broker: EmbeddedBroker) -> None:
    """The fleet runner heartbeats every device it is given, video tablets included."""

    async def go() -> None:
        await _registered(embedded_broker, [TABLET, DISPENSER])
        service = Service(embedded_broker)
        await service.start()
        fast = dataclasses.replace(SCENARIOS["heartbeats"], heartbeat_s=0.3, connect_over_s=0.1)
        stop = asyncio.Event()
        broker = MqttConfig("127.0.0.1", embedded_broker.port)
        fleet = asyncio.create_task(run_fleet([TABLET, DISPENSER], broker, stop, scenario=fast))
        await _until(lambda: len(service.messages(TABLET.device_id, "heartbeat")) >= 2)
        stop.set()
        await fleet
        beats = service.messages(TABLET.device_id, "heartbeat")
        assert all(isinstance(b, Heartbeat) and b.battery is not None for b in beats)
        await service.client.disconnect()

    _run(go())


def test_dispenser_answers_remind_and_set_schedule_with_a_cmdack(embedded_broker: EmbeddedBroker) -> None:
    """A dispenser answers each command with a cmdack carrying its cmd_id and result on its cmdack topic,
    and reports the new schedule after a set_schedule."""

    async def go() -> None:
        await _registered(embedded_broker, [DISPENSER])
        service = Service(embedded_broker)
        await service.start()
        device = SimDevice(DISPENSER, MqttConfig("127.0.0.1", embedded_broker.port))
        device.start()
        await _until(lambda: service.online(DISPENSER.device_id))
        service.command(DISPENSER.device_id, "remind-1", "remind", dose_id="d-0800")
        doses = [
            {"dose_id": "morning", "at": "08:30", "label": "Metformin 500 mg"},
            {"dose_id": "e", "at": "20:00"},
        ]
        service.command(DISPENSER.device_id, "set_schedule-1", "set_schedule", version=8, doses=doses)
        await _until(lambda: len(service.messages(DISPENSER.device_id, "schedule")) == 1)
        await _until(lambda: device.pending() == 0)
        acks = service.messages(DISPENSER.device_id, "cmdack")
        assert [(a.cmd_id, a.result) for a in acks] == [("remind-1", "done"), ("set_schedule-1", "done")]
        assert all(isinstance(a, CommandAck) for a in acks)
        (schedule,) = service.messages(DISPENSER.device_id, "schedule")
        assert isinstance(schedule, ScheduleReport) and schedule.version == 8
        assert [(d.dose_id, d.at, d.label) for d in schedule.doses] == [
            ("morning", "08:30", "Metformin 500 mg"),
            ("e", "20:00", None),
        ]
        await device.stop()
        await service.client.disconnect()

    _run(go())


def test_a_repeated_command_is_answered_alike_and_carried_out_once(embedded_broker: EmbeddedBroker) -> None:
    """QoS 1 may deliver a command twice: the same result again, and one schedule report only."""

    async def go() -> None:
        await _registered(embedded_broker, [DISPENSER])
        service = Service(embedded_broker)
        await service.start()
        device = SimDevice(DISPENSER, MqttConfig("127.0.0.1", embedded_broker.port))
        device.start()
        await _until(lambda: service.online(DISPENSER.device_id))
        for _ in range(2):
            service.command(DISPENSER.device_id, "set_schedule-2", "set_schedule", version=3, doses=[])
        await _until(lambda: len(service.messages(DISPENSER.device_id, "cmdack")) == 2)
        await _until(lambda: device.pending() == 0)
        acks = service.messages(DISPENSER.device_id, "cmdack")
        assert [(a.cmd_id, a.result) for a in acks] == [("set_schedule-2", "done")] * 2
        assert len({a.msg_id for a in acks}) == 2  # two events, each acknowledged on its own
        assert len(service.messages(DISPENSER.device_id, "schedule")) == 1
        await device.stop()
        await service.client.disconnect()

    _run(go())


def test_a_button_refuses_a_remind_with_a_reason(embedded_broker: EmbeddedBroker) -> None:
    """A device that cannot carry a command out answers refused, with the reason."""

    async def go() -> None:
        await _registered(embedded_broker, [BUTTON])
        service = Service(embedded_broker)
        await service.start()
        device = SimDevice(BUTTON, MqttConfig("127.0.0.1", embedded_broker.port))
        device.start()
        await _until(lambda: service.online(BUTTON.device_id))
        service.command(BUTTON.device_id, "remind-3", "remind", dose_id="d-0800")
        await _until(lambda: service.messages(BUTTON.device_id, "cmdack"))
        (ack,) = service.messages(BUTTON.device_id, "cmdack")
        assert (ack.cmd_id, ack.result) == ("remind-3", "refused") and "alarm_button" in ack.reason
        await device.stop()
        await service.client.disconnect()

    _run(go())


def test_care_day_actions_go_out_as_valid_protocol_messages(embedded_broker: EmbeddedBroker) -> None:
    """Each kind of care-day event reaches the service and decodes: the reused msg_id alarm carries an
    already used msg_id with another payload; stock_low has doses_left; faults are faults."""

    async def go() -> None:
        await _registered(embedded_broker, [BUTTON, DISPENSER])
        service = Service(embedded_broker)
        await service.start()
        broker = MqttConfig("127.0.0.1", embedded_broker.port)
        button, dispenser = SimDevice(BUTTON, broker), SimDevice(DISPENSER, broker)
        for d in (button, dispenser):
            d.start()
        await _until(lambda: service.online(BUTTON.device_id) and service.online(DISPENSER.device_id))
        plan = [
            (button, Action(0, 0, "alarm", "button")),
            (button, Action(0, 0, "heartbeat", value=17)),
            (button, Action(0, 0, "alarm_reused_id", "pendant")),
            (dispenser, Action(0, 1, "dose_due", "d-0800")),
            (dispenser, Action(0, 1, "dose_missed", "d-0800")),
            (dispenser, Action(0, 1, "dose_taken", "d-0800")),
            (dispenser, Action(0, 1, "stock_low", value=3)),
            (dispenser, Action(0, 1, "fault", "power_lost")),
            (dispenser, Action(0, 1, "fault", "power_restored")),
        ]
        for device, action in plan:
            _DO[action.what](device, action, CARE_DAY)
        await _until(lambda: len(service.messages(DISPENSER.device_id, "fault")) == 2)
        await _until(lambda: len(service.messages(BUTTON.device_id, "alarm")) == 2)
        first, again = service.messages(BUTTON.device_id, "alarm")
        assert first.msg_id == again.msg_id and (first.alarm_kind, again.alarm_kind) == ("button", "pendant")
        (beat,) = service.messages(BUTTON.device_id, "heartbeat")
        assert beat.battery == 17
        assert [d.event for d in service.messages(DISPENSER.device_id, "dose")] == ["due", "missed", "taken"]
        (stock,) = service.messages(DISPENSER.device_id, "dispenser")
        assert isinstance(stock, DispenserEvent) and (stock.event, stock.doses_left) == ("stock_low", 3)
        faults = service.messages(DISPENSER.device_id, "fault")
        assert all(isinstance(f, Fault) for f in faults)
        assert [f.fault for f in faults] == ["power_lost", "power_restored"]
        for d in (button, dispenser):
            await d.stop()
        await service.client.disconnect()

    _run(go())
