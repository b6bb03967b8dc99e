"""The embedded MQTT broker: Mosquitto as a child process, with a configuration this program writes.

Used when no ``CAREALARM_MQTT_URL`` is configured. The database is the source of truth for device
credentials; the password and ACL files are rebuilt from it at every start.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ACL",
    "SERVICE_USER",
    "BrokerError",
    "EmbeddedBroker",
    "TlsListener",
    "mosquitto_hash",
    "reload_running",
    "service_password",
    "write_auth_files",
]

log = logging.getLogger(__name__)

SERVICE_USER = "carealarm"
# Mosquitto 2's own default iteration count for ``$7$`` (PBKDF2-SHA512) hashes. Every device CONNECT
# verifies one hash; a fleet of 10,000 reconnecting after a broker restart must not stall the broker.
_PBKDF2_ITERATIONS = 101


class BrokerError(RuntimeError):
    """The embedded broker could not be started."""


def mosquitto_hash(password: str, *, salt: bytes | None = None, iterations: int = _PBKDF2_ITERATIONS) -> str:
    """Return a Mosquitto 2 password-file hash (``$7$iterations$salt$digest``) for ``password``."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def service_password(broker_dir: Path) -> str:
    """Return the services' broker password, creating it (mode 0600) on first use."""
    path = broker_dir / "service.secret"
    if not path.exists():
        broker_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(24))
    return path.read_text().strip()


ACL = (
    "# written by carealarm\n"
    f"user {SERVICE_USER}\ntopic readwrite carealarm/#\n\n"
    "# a device (user name = device id) writes its own reports and reads what the service sends it\n"
    "pattern write carealarm/v1/devices/%u/heartbeat\n"
    "pattern write carealarm/v1/devices/%u/alarm\n"
    "pattern write carealarm/v1/devices/%u/dose\n"
    "pattern write carealarm/v1/devices/%u/dispenser\n"
    "pattern write carealarm/v1/devices/%u/schedule\n"
    "pattern write carealarm/v1/devices/%u/fault\n"
    "pattern write carealarm/v1/devices/%u/cmdack\n"
    "pattern readwrite carealarm/v1/devices/%u/status\n"
    "pattern read carealarm/v1/devices/%u/ack\n"
    "pattern read carealarm/v1/devices/%u/cmd\n"
)


def write_auth_files(directory: Path, service_hash: str, device_hashes: Iterable[tuple[str, str]]) -> None:
    """Write a Mosquitto password file and ACL file (mode 0600) for the service user and every device."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"{SERVICE_USER}:{service_hash}"]
    lines += [f"{device_id}:{pw_hash}" for device_id, pw_hash in device_hashes if pw_hash]
    _write_private(directory / "passwd", "\n".join(lines) + "\n")
    _write_private(directory / "acl", ACL)


def reload_running(directory: Path, device_hashes: Iterable[tuple[str, str]]) -> bool:
    """Rewrite the auth files of an embedded broker and SIGHUP it if it runs; True if it was told."""
    pid_file = directory / "mosquitto.pid"
    write_auth_files(directory.resolve(), mosquitto_hash(service_password(directory)), device_hashes)
    try:
        os.kill(int(pid_file.read_text().strip()), signal.SIGHUP)
    except (OSError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class TlsListener:
    """A TLS listener for devices: port, certificate and key (and a CA file for client certificates)."""

    port: int
    certfile: Path
    keyfile: Path
    cafile: Path | None = None
    bind: str = "0.0.0.0"


@dataclass
class EmbeddedBroker:
    """A Mosquitto child process on 127.0.0.1:``port`` with auth, ACLs and persistence."""

    directory: Path
    port: int
    tls: TlsListener | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{SERVICE_USER}:{service_password(self.directory)}@127.0.0.1:{self.port}"

    def write_config(self, device_hashes: Iterable[tuple[str, str]]) -> Path:
        """Write mosquitto.conf, the password file and the ACL file; return the config path."""
        d = self.directory.resolve()
        d.mkdir(parents=True, exist_ok=True)
        (d / "data").mkdir(exist_ok=True)
        write_auth_files(d, mosquitto_hash(service_password(self.directory)), device_hashes)
        tls = ""
        if self.tls is not None:
            tls = (
                f"\n# devices in the field connect over TLS\nlistener {self.tls.port} {self.tls.bind}\n"
                f"certfile {self.tls.certfile.resolve()}\nkeyfile {self.tls.keyfile.resolve()}\n"
                + (f"cafile {self.tls.cafile.resolve()}\n" if self.tls.cafile else "")
                + "tls_version tlsv1.2\n"
            )
        conf = d / "mosquitto.conf"
        conf.write_text(
            "# written by carealarm at every start of the embedded broker\n"
            "per_listener_settings false\n"
            f"listener {self.port} 127.0.0.1\n" + tls + "allow_anonymous false\n"
            f"password_file {d / 'passwd'}\n"
            f"acl_file {d / 'acl'}\n"
            f"pid_file {d / 'mosquitto.pid'}\n"
            "persistence true\n"
            f"persistence_location {d / 'data'}/\n"
            # 0 = no limit: a gateway that is down must find every alarm queued when it comes back.
            "max_queued_messages 0\n"
            "max_connections -1\n"
            "autosave_interval 10\n"
            # Started as root, Mosquitto would switch to the 'mosquitto' user and lose access to these
            # private files; keep the user that started it.
             + ("user root\n" if os.geteuid() == 0 else "") + "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )
        return conf

    def start(self, device_hashes: Iterable[tuple[str, str]], timeout_s: float = 10.0) -> None:
        exe = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
        )
        if exe is None:
            raise BrokerError(
                "mosquitto is not installed: run 'make setup' (or 'apt-get install mosquitto'), "
                "or set CAREALARM_MQTT_URL to an existing broker"
            )
        if _port_open(self.port):
            raise BrokerError(
                f"port {self.port} is already in use: another broker or carealarm is running there; "
                "set CAREALARM_EMBEDDED_MQTT_PORT to a free port"
            )
        conf = self.write_config(device_hashes)
        log_path = self.directory / "mosquitto.log"
        with open(log_path, "ab") as log_fh:
            self.process = subprocess.Popen(
                [exe, "-c", str(conf)], stdout=log_fh, stderr=log_fh, preexec_fn=_die_with_parent
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(f"mosquitto exited with {self.process.returncode}; see {log_path}")
            if _port_open(self.port):
                log.info("embedded mosquitto listening on 127.0.0.1:%s (pid %s)", self.port, self.process.pid)
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on {self.port} within {timeout_s}s; see {log_path}")

    def reload(self, device_hashes: Iterable[tuple[str, str]]) -> None:
        """Rewrite the password and ACL files and tell Mosquitto to re-read them (SIGHUP)."""
        self.write_config(device_hashes)
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _die_with_parent() -> None:
    """In the child: have Linux stop the broker if carealarm dies, even by kill -9 (no orphan on the port)."""
    try:
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except OSError:
        pass  # not Linux: the broker outlives a crashed parent, and the next start reports the busy port


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0
