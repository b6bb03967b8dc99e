"""``python -m devices.video``: one simulated video device in the foreground (tests, benchmarks, labs).

It prints one JSON object per event on stdout and takes button presses on stdin, one per line:
``answer``, ``decline``, ``hangup``, ``call``, ``stats``, ``quit``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from typing import Any

from messaging.mqtt import MqttConfig

from .endpoint import EndpointConfig
from .ice import use_loopback_candidates
from .runtime import VideoDevice

_lock = threading.Lock()


def _print(name: str, data: dict[str, Any]) -> None:
    with _lock:
        print(json.dumps({"event": name, **data}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devices.video", description=__doc__)
    parser.add_argument("--device-id", required=True)
    parser.add_argument("--password", required=True, help="the device's password (logs in as {id}/video)")
    parser.add_argument("--mqtt-url", required=True, help="mqtt://host:port of the broker")
    parser.add_argument("--central-url", required=True, help="http://host:port of central")
    parser.add_argument("--no-auto-answer", action="store_true", help="always wait for the answer button")
    parser.add_argument("--loopback", action="store_true", help="gather 127.0.0.1 ICE candidates only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.loopback:
        use_loopback_candidates()
    config = EndpointConfig(
        args.device_id, args.password, args.central_url, allow_auto_answer=not args.no_auto_answer
    )
    device = VideoDevice(config, MqttConfig.from_url(args.mqtt_url), on_event=_print)
    device.start()
    if device.connected.wait(10):
        _print("ready", {"device_id": args.device_id})
    actions = {
        "answer": device.answer,
        "decline": device.decline,
        "hangup": device.hangup,
        "call": device.call_care_station,
    }
    try:
        for line in sys.stdin:
            word = line.strip()
            if word == "quit":
                break
            if word == "stats":
                sink = device.endpoint.sink
                _print("stats", {"video_frames": sink.video_frames, "audio_frames": sink.audio_frames})
            elif word in actions:
                actions[word]()
    finally:
        device.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
