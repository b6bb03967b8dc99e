"""The embedded Mosquitto: a child process with the dynamic-security plugin, persistence and an optional
TLS listener, for one-machine installs, the demo and the tests.

Who may connect and what each may do is ``messaging.accounts``; this module only runs the broker with the
file written from it.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from messaging.accounts import (
    MAX_PACKET_SIZE,
    SERVICE_USER,
    BrokerError,
    DeviceAccount,
    dynsec_config,
    mosquitto_hash,
    service_password,
)

__all__ = ["MAX_PACKET_SIZE", "MAX_QUEUED_BYTES", "EmbeddedBroker", "TlsListener", "dynsec_plugin"]

log = logging.getLogger(__name__)

# The payload bytes Mosquitto queues per client session beyond those in flight; past it, it drops new
# messages for that session without a word. Only the service's sessions ever queue much (a device receives
# its own acks and commands only), so this bounds the broker's memory when a gateway is down, or a device
# floods while it is (10 such sessions: 2.5 GiB at most). Generous: a fleet of 10,000 devices with a
# heartbeat every 30 s (about 150 bytes each) fills the gateway's bulk session in about 90 minutes of
# outage, its alarms session (alarms, doses, status only) far later. An alarm dropped then is not lost: a
# device resends until the application ack (docs/protocol.md §6), and the resend reaches the gateway once
# its session has drained.
MAX_QUEUED_BYTES = 256 * 1024 * 1024


def dynsec_plugin() -> Path | None:
    """Where Mosquitto's dynamic-security plugin is installed (Debian: /usr/lib/<arch>/), if anywhere."""
    name = "mosquitto_dynamic_security.so"
    places = [f"/usr/lib/*/{name}", f"/usr/lib/{name}", f"/usr/lib64/{name}", f"/usr/local/lib/{name}"]
    exe = shutil.which("mosquitto")
    if exe:  # a broker installed under another prefix (/opt, Homebrew) keeps its plugins beside it
        places.append(str(Path(exe).resolve().parent.parent / "lib" / name))
    for pattern in places:
        for found in sorted(glob.glob(pattern)):
            return Path(found)
    return None


@dataclass(frozen=True)
class TlsListener:
    """A TLS listener for devices: port, certificate and key (and a CA file for client certificates)."""

    port: int
    certfile: Path
    keyfile: Path
    cafile: Path | None = None
    bind: str = "0.0.0.0"


Accounts = Iterable[DeviceAccount | tuple[str, str]]


@dataclass
class EmbeddedBroker:
    """A Mosquitto child process on 127.0.0.1:``port`` with the dynamic-security plugin and persistence."""

    directory: Path
    port: int
    tls: TlsListener | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{SERVICE_USER}:{service_password(self.directory)}@127.0.0.1:{self.port}"

    @property
    def dynsec_file(self) -> Path:
        return self.directory.resolve() / "dynamic-security.json"

    def write_config(self, accounts: Accounts) -> Path:
        """Write mosquitto.conf and the plugin's file from ``accounts``; return the config path."""
        d = self.directory.resolve()
        d.mkdir(parents=True, exist_ok=True)
        (d / "data").mkdir(exist_ok=True)
        plugin = dynsec_plugin()
        if plugin is None:
            raise BrokerError(
                "Mosquitto's dynamic-security plugin (mosquitto_dynamic_security.so) is not installed: "
                "install Mosquitto 2 with its plugins (Debian: apt-get install mosquitto)"
            )
        config = dynsec_config(mosquitto_hash(service_password(self.directory)), accounts)
        _write_private(self.dynsec_file, json.dumps(config, indent=1) + "\n")
        for stale in ("passwd", "acl"):  # an older version's files: the plugin holds the accounts now
            (d / stale).unlink(missing_ok=True)
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
            # Accounts, roles and client ids; loaded from the database at every start, changed at run time
            # over $CONTROL/dynamic-security/v1 by the service account.
            f"plugin {plugin}\n"
            f"plugin_opt_config_file {self.dynsec_file}\n"
            f"max_packet_size {MAX_PACKET_SIZE}\n"
            f"pid_file {d / 'mosquitto.pid'}\n"
            "persistence true\n"
            f"persistence_location {d / 'data'}/\n"
            # No count limit: a gateway that is down must find every alarm queued when it comes back; the
            # byte bound keeps a flood from taking the broker's memory.
            "max_queued_messages 0\n"
            f"max_queued_bytes {MAX_QUEUED_BYTES}\n"
            "max_connections -1\n"
            "autosave_interval 10\n"
            # Started as root, Mosquitto would switch to the 'mosquitto' user and lose access to these
            # private files; keep the user that started it.
             + ("user root\n" if os.geteuid() == 0 else "") + "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )
        return conf

    def start(self, accounts: Accounts, timeout_s: float = 10.0) -> None:
        """Start Mosquitto with exactly ``accounts`` (from ``storage.registry.broker_accounts``)."""
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
        conf = self.write_config(accounts)
        log_path = self.directory / "mosquitto.log"
        with open(log_path, "ab") as log_fh:
            self.process = subprocess.Popen(
                [exe, "-c", str(conf)],
                stdout=log_fh,
                stderr=log_fh,
                preexec_fn=_die_with_parent,
                # Its own process group: a Ctrl+C at the terminal (or systemd's SIGTERM to the group) reaches
                # carealarm, which stops the broker last, in order — not the broker first, mid-shutdown.
                process_group=0,
                umask=0o077,  # the plugin rewrites its file (password hashes) at each change: keep it private
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

    def reload(self, accounts: Accounts) -> None:
        """Replace every account at once from hashes: rewrite the plugin's file and restart the broker.

        For callers that hold only hashes (tests, benchmarks). Connected clients are disconnected; persistent
        sessions and queued messages survive. A running service changes accounts with
        :class:`DynsecAccounts` instead, which disconnects nobody else.
        """
        if self.process is not None and self.process.poll() is None:
            self.stop()
            self.start(accounts)
        else:
            self.write_config(accounts)

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
