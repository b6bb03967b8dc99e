"""The embedded Mosquitto: generated configuration, no anonymous access, per-device credentials and ACLs."""

from __future__ import annotations

import subprocess
import time

from helpers import MqttProbe, service_config

from carealarm.broker import EmbeddedBroker, mosquitto_hash
from carealarm.mqtt import MqttConfig


def _device(broker: EmbeddedBroker, device_id: str, password: str) -> MqttConfig:
    return MqttConfig("127.0.0.1", broker.port, device_id, password)


def test_config_has_the_required_settings(embedded_broker: EmbeddedBroker) -> None:
    """The generated configuration turns persistence on, queues without limit and refuses anonymous access."""
    conf = (embedded_broker.directory / "mosquitto.conf").read_text()
    for line in ("persistence true", "max_queued_messages 0", "allow_anonymous false", "listener "):
        assert line in conf


def test_anonymous_and_wrong_password_are_refused(embedded_broker: EmbeddedBroker) -> None:
    """Without credentials, or with a wrong password, the broker refuses the connection."""
    anonymous = MqttProbe(MqttConfig("127.0.0.1", embedded_broker.port))
    wrong = MqttProbe(MqttConfig("127.0.0.1", embedded_broker.port, "carealarm", "not-the-password"))
    try:
        assert not anonymous.connected()
        assert not wrong.connected()
    finally:
        anonymous.close()
        wrong.close()


def test_device_credentials_work_after_reload(embedded_broker: EmbeddedBroker) -> None:
    """A device provisioned while the broker runs can connect once the files are reloaded (SIGHUP)."""
    embedded_broker.reload([("btn-1", mosquitto_hash("s3cret"))])
    time.sleep(0.5)
    probe = MqttProbe(_device(embedded_broker, "btn-1", "s3cret"))
    try:
        assert probe.connected()
    finally:
        probe.close()


def test_device_is_confined_to_its_own_topics(embedded_broker: EmbeddedBroker) -> None:
    """A device cannot publish as another device nor read another device's acks (pattern ACL %u)."""
    embedded_broker.reload([("btn-1", mosquitto_hash("a")), ("btn-2", mosquitto_hash("b"))])
    time.sleep(0.5)
    service = MqttProbe(service_config(embedded_broker))
    one = MqttProbe(_device(embedded_broker, "btn-1", "a"))
    try:
        assert service.connected() and one.connected()
        service.subscribe("carealarm/v1/devices/+/alarm")
        # Mosquitto 2.0 grants the subscription but checks the ACL at delivery: nothing of btn-2 arrives.
        one.subscribe("carealarm/v1/devices/+/ack")
        service.client.publish("carealarm/v1/devices/btn-2/ack", b"for two", qos=1)
        service.client.publish("carealarm/v1/devices/btn-1/ack", b"for one", qos=1)
        assert one.next()[:2] == ("carealarm/v1/devices/btn-1/ack", b"for one")
        assert one.drain() == []
        one.client.publish("carealarm/v1/devices/btn-2/alarm", b'{"msg_id":"spoof","ts":1}', qos=1)
        one.client.publish("carealarm/v1/devices/btn-1/alarm", b'{"msg_id":"real","ts":1}', qos=1)
        received = [service.next()]
        received += service.drain()
        assert [topic for topic, _, _ in received] == ["carealarm/v1/devices/btn-1/alarm"]
    finally:
        service.close()
        one.close()


def test_mosquitto_pub_with_device_credentials(embedded_broker: EmbeddedBroker) -> None:
    """mosquitto_pub, a client nobody here wrote, authenticates with a hash this program generated."""
    embedded_broker.reload([("med-1", mosquitto_hash("pw-med"))])
    time.sleep(0.5)
    service = MqttProbe(service_config(embedded_broker))
    try:
        assert service.connected()
        service.subscribe("carealarm/v1/devices/med-1/#")
        subprocess.run(
            [
                "mosquitto_pub",
                "-h",
                "127.0.0.1",
                "-p",
                str(embedded_broker.port),
                "-u",
                "med-1",
                "-P",
                "pw-med",
                "-q",
                "1",
                "-t",
                "carealarm/v1/devices/med-1/heartbeat",
                "-m",
                '{"msg_id":"h1","ts":1}',
            ],
            check=True,
            timeout=10,
        )
        assert service.next()[0] == "carealarm/v1/devices/med-1/heartbeat"
    finally:
        service.close()


def test_deploy_acl_matches_the_embedded_one() -> None:
    """The production ACL in deploy/ gives the same rules as the embedded broker's."""
    from pathlib import Path

    from carealarm.broker import ACL

    def rules(text: str) -> list[str]:
        return [line for line in text.splitlines() if line and not line.startswith("#")]

    deploy = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto" / "acl"
    assert rules(deploy.read_text()) == rules(ACL)


def test_provisioning_a_device_lets_it_connect_at_once(embedded_broker: EmbeddedBroker) -> None:
    """`carealarm clients add` + `carealarm devices add` while the broker runs: the printed password works."""
    import os
    import sys

    data_dir = embedded_broker.directory.parent  # the fixture's broker lives in <data dir>/broker
    env = {
        **os.environ,
        "CAREALARM_DATA_DIR": str(data_dir),
        "CAREALARM_EMBEDDED_MQTT_PORT": str(embedded_broker.port),
    }

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "carealarm.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout

    assert "client 1" in cli("clients", "add", "--name", "Mevr. Nieuw")
    out = cli("devices", "add", "btn-new", "--client", "1", "--kind", "alarm_button")
    assert "re-read its password file" in out
    password = next(line.split()[2] for line in out.splitlines() if line.startswith("MQTT password:"))
    time.sleep(0.5)
    probe = MqttProbe(_device(embedded_broker, "btn-new", password))
    try:
        assert probe.connected()
    finally:
        probe.close()
