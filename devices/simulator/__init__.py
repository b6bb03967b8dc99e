"""Simulated devices that speak protocol v1 to a real broker, as real devices would.

Every simulated device (``device.py``) has its own MQTT connection, credentials and Last Will; it
heartbeats (alarm buttons, dispensers and video tablets alike), resends each event until the service acks
it, and answers every command it can read with one ``cmdack`` (``commands.py``): a dispenser carries out
``remind`` and ``set_schedule`` (then reports the new ``schedule``), other kinds refuse what they cannot
do, and a ``ring`` on a video tablet is left to its video endpoint (``devices/video``). Devices also
report faults (``power_lost``, ``power_restored``, ``hardware``, ...), a dispenser's ``stock_low`` with
``doses_left``, and their battery in each heartbeat.

``carealarm simulate --scenario NAME --seed N`` runs the fleet of ``<data dir>/fleet.json`` (written by
``carealarm run --demo``) against a running service; the same scenario and seed give the same run. The
rate scenarios (``scenarios.py``: ``demo``, ``realistic``, ``heartbeats``, ``storm``) run until stopped.
Scenario ``care-day`` (``careday.py``) is a script: one day of a care station, 07:00-23:00, compressed
(``--compress``, default 240 day seconds per run second: the day takes four minutes), with
every case the console must handle: an alarm, a second alarm (a fall) of the same client, an alarm button
offline while its client's tablet heartbeats, a missed dose, a dose taken late, two doses of one client
(one late, one missed), a msg_id reused with another alarm, a low battery next to a healthy device, low
stock, a power cut. It logs its plan, then a line per case action with the run time and the day's clock.
After the day the devices stay online, heartbeating, so the console stays as the day left it, until
Ctrl+C (or ``--duration``; stopping makes every device go offline). Run it against a service whose own
fleet is not running (``carealarm run --demo`` without ``--simulate``): two simulators with the same
devices take each other's connections over.
"""
