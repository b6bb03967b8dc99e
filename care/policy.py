"""Escalation policy: the defaults, where each comes from, and per-organisation / per-client overrides.

Every time is in seconds. A policy is stored as a JSON object of overrides (``policies`` table: one row
for the organisation, client_id NULL, and at most one per client); the client's row wins over the
organisation's, which wins over these defaults.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .errors import CareError

__all__ = ["DEFAULT_POLICY", "Policy", "PolicyError", "merge_policy"]


class PolicyError(CareError, ValueError):
    """A policy override that is unknown or out of its allowed range."""


@dataclass(frozen=True, slots=True)
class Policy:
    # Alarms. The UK TEC Quality code asks 97.5% of alarm calls answered within 60 s and 99% within 180 s:
    # an alarm not acknowledged at 60 s goes to every care-station nurse on duty and the supervisor, and
    # at 180 s to the next level (supervisor and district nurse on duty).
    alarm_first_escalation_s: int = 60
    alarm_second_escalation_s: int = 180
    # A client may cancel a false press on the device; a cancel within this window closes the alarm as
    # cancelled (a typical pre-alarm window of social alarm pendants is 15-30 s).
    pre_alarm_window_s: int = 30
    # Medication. A Medido-style dispenser warns the care organisation when a dose is not taken 45 or 75
    # minutes after it was due: 45 min is the default grace, 15-75 min allowed.
    dose_grace_s: int = 45 * 60
    # A missed-dose alert not acknowledged within this time goes to the district nurse on duty.
    dose_alert_escalation_s: int = 15 * 60
    # The client's informal carer is e-mailed about a missed dose when the care plan says so.
    notify_informal_carer: bool = False
    # Misses within this window raise the priority of the next missed-dose alert.
    repeat_miss_window_s: int = 7 * 24 * 3600
    # Devices. Offline after this many missed heartbeat intervals without a Last Will.
    missed_heartbeats: int = 2
    # Interval assumed for a device that never said its own (protocol v1 heartbeat default).
    default_heartbeat_s: int = 300
    # A registered device that never connected within this time after provisioning is reported.
    never_connected_after_s: int = 3600
    # An offline alarm button leaves the client unprotected: escalate to the supervisor after this long.
    offline_button_escalation_s: int = 15 * 60
    battery_low_pct: int = 20
    # Stock running out: warn when the doses left last less than this (72 h: time for a pharmacy refill).
    stock_warning_s: int = 72 * 3600
    # Follow-up visits: a district nurse should be at the door within 20-45 minutes; default target 30.
    visit_target_s: int = 30 * 60


DEFAULT_POLICY = Policy()

# Allowed ranges for settings people may change (seconds unless said otherwise).
_RANGES: dict[str, tuple[int, int]] = {
    "alarm_first_escalation_s": (10, 600),
    "alarm_second_escalation_s": (30, 1800),
    "pre_alarm_window_s": (0, 120),
    "dose_grace_s": (15 * 60, 75 * 60),
    "dose_alert_escalation_s": (60, 4 * 3600),
    "repeat_miss_window_s": (3600, 30 * 24 * 3600),
    "missed_heartbeats": (1, 10),
    "default_heartbeat_s": (10, 86_400),
    "never_connected_after_s": (60, 7 * 86_400),
    "offline_button_escalation_s": (60, 4 * 3600),
    "battery_low_pct": (5, 50),
    "stock_warning_s": (3600, 14 * 86_400),
    "visit_target_s": (5 * 60, 4 * 3600),
}
_NAMES = {f.name for f in fields(Policy)}


def merge_policy(*overrides_json: str | None, validate: bool = True) -> Policy:
    """Apply JSON overrides, organisation first then client, over the defaults.

    ``validate`` checks names and ranges (for what people enter); stored test fixtures may bypass it.
    """
    policy = DEFAULT_POLICY
    for raw in overrides_json:
        if not raw:
            continue
        try:
            overrides: Any = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise PolicyError(f"policy is not JSON: {exc.msg}") from None
        if not isinstance(overrides, dict):
            raise PolicyError("a policy is a JSON object of settings")
        policy = replace(policy, **_checked(overrides, validate))
    if validate and policy.alarm_second_escalation_s <= policy.alarm_first_escalation_s:
        raise PolicyError("alarm_second_escalation_s must come after alarm_first_escalation_s")
    return policy


def _checked(overrides: dict[str, Any], validate: bool) -> dict[str, Any]:
    unknown = set(overrides) - _NAMES
    if unknown:
        raise PolicyError(f"unknown policy settings: {sorted(unknown)}")
    if not validate:
        return overrides
    defaults = asdict(DEFAULT_POLICY)
    for name, value in overrides.items():
        expected = type(defaults[name])
        if type(value) is not expected:
            raise PolicyError(f"{name} must be {expected.__name__}")
        if name in _RANGES and not _RANGES[name][0] <= value <= _RANGES[name][1]:
            low, high = _RANGES[name]
            raise PolicyError(f"{name} must be between {low} and {high}")
    return overrides
