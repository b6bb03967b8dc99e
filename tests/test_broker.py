"""The embedded Mosquitto: generated configuration, no anonymous access, per-device credentials and ACLs
(held by the dynamic-security plugin, loaded from the database's hashes)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from helpers import MqttProbe, free_port, service_config

from carealarm.broker import EmbeddedBroker
from messaging.accounts import DeviceAccount, device_role, dynsec_config, mosquitto_hash
from messaging.mqtt import MqttConfig


def _device(broker: EmbeddedBroker, device_id: str, password: str) -> MqttConfig:
    return MqttConfig("127.0.0.1", broker.port, device_id, password)


def test_config_has_the_required_settings(embedded_broker: EmbeddedBroker) -> None:
    """The generated configuration turns persistence on, queues without limit, refuses anonymous access and
    leaves accounts to the dynamic-security plugin (no password file)."""
    conf = (embedded_broker.directory / "mosquitto.conf").read_text()
    for line in (
        "persistence true",
        "max_queued_messages 0",
        "allow_anonymous false",
        "listener ",
        "plugin_opt_config_file ",
        "max_packet_size 8192",
    ):
        assert line in conf
    assert "password_file" not in conf and "acl_file" not in conf
    assert (embedded_broker.directory / "dynamic-security.json").stat().st_mode & 0o077 == 0


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
    """A device whose hash the broker is given (reload: the plugin's file rewritten, the broker restarted)
    connects with its password: the ``$7$`` hash converts to the plugin's password, salt and iterations."""
    embedded_broker.reload([("btn-1", mosquitto_hash("s3cret"))])
    probe = MqttProbe(_device(embedded_broker, "btn-1", "s3cret"))
    try:
        assert probe.connected()
    finally:
        probe.close()


def test_device_is_confined_to_its_own_topics(embedded_broker: EmbeddedBroker) -> None:
    """A device cannot publish as another device nor read another device's acks (pattern ACL %u)."""
    embedded_broker.reload([("btn-1", mosquitto_hash("a")), ("btn-2", mosquitto_hash("b"))])
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


def test_hash_from_mosquitto_passwd_works_in_the_plugin(tmp_path: Path) -> None:
    """A ``$7$`` hash made by Mosquitto's own mosquitto_passwd is held by the dynamic-security plugin as its
    password, salt and iterations, and the real broker accepts the password and refuses another."""
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "med-9", "pw from the tool"], check=True)
    pw_hash = passwd.read_text().strip().split(":", 1)[1]
    _, seven, iterations, salt, digest = pw_hash.split("$")
    broker = EmbeddedBroker(tmp_path / "broker", free_port())
    broker.start([DeviceAccount("med-9", pw_hash, client_id="med-9")])
    held = json.loads((broker.directory / "dynamic-security.json").read_text())
    entry = next(c for c in held["clients"] if c["username"] == "med-9")
    assert (seven, entry["iterations"], entry["salt"], entry["password"]) == (
        "7",
        int(iterations),
        salt,
        digest,
    )
    right = MqttProbe(_device(broker, "med-9", "pw from the tool"), client_id="med-9")
    wrong = MqttProbe(_device(broker, "med-9", "pw from the tool!"), client_id="med-9")
    try:
        assert right.connected()
        assert not wrong.connected()
    finally:
        right.close()
        wrong.close()
        broker.stop()


def test_device_role_gives_the_rules_of_the_deploy_acl() -> None:
    """A device's role allows exactly what the ACL in deploy/ (the rules of docs/protocol.md §1) allows:
    write = publishClientSend, read = publishClientReceive (and subscribe), on its own topics."""
    deploy = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto" / "acl"
    expected = set()
    for line in deploy.read_text().splitlines():
        if line.startswith("pattern "):
            _, access, topic = line.split()
            topic = topic.replace("%u", "btn-1")
            if "write" in access:
                expected.add(("publishClientSend", topic))
            if "read" in access:
                expected |= {("publishClientReceive", topic), ("subscribeLiteral", topic)}
    role = device_role("btn-1")
    assert {(a["acltype"], a["topic"]) for a in role["acls"]} == expected
    assert all(a["allow"] for a in role["acls"])
    service = next(
        r for r in dynsec_config(mosquitto_hash("x"), [])["roles"] if r["rolename"] == "carealarm-service"
    )
    assert {("publishClientSend", "carealarm/#"), ("publishClientReceive", "carealarm/#")} <= {
        (a["acltype"], a["topic"]) for a in service["acls"]
    }


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
    assert "the broker lets btn-new in now" in out
    password = next(line.split()[2] for line in out.splitlines() if line.startswith("MQTT password:"))
    probe = MqttProbe(_device(embedded_broker, "btn-new", password), client_id="btn-new")
    try:
        assert probe.connected()
    finally:
        probe.close()
