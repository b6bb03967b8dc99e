"""The API's answers, as pydantic models: what each JSON route returns (its ``response_model``).

The routes build plain dicts (the views in :mod:`central.views` and the care domain's); these models are
the published shape of them, checked on the way out. Shapes that are several kinds in one list (a client's
timeline entries) stay open (``dict[str, Any]``): their kinds are documented where they are built.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .ids import MAX_ID

__all__ = [
    "ClientFieldsChanged",
    "ClientFieldsEdit",
    "ContactIn",
    "ContactList",
    "ContactViews",
    "KeySafeCode",
    "AlertNoteView",
    "AlertView",
    "AuditPage",
    "CallView",
    "CallsConfigView",
    "ChainHealthView",
    "ClientNoteView",
    "ClientPage",
    "ClientRecord",
    "ClientSearch",
    "ClientSummary",
    "ConsentView",
    "Liveness",
    "Me",
    "TimelinePage",
    "VideoCallee",
    "VisitArrived",
    "VisitSent",
    "WindowList",
    "WindowTargets",
    "WindowView",
]


class Me(BaseModel):
    id: int
    username: str
    display_name: str
    role: str


# -- alerts -------------------------------------------------------------------------------------------


class AlertClient(BaseModel):
    id: int
    name: str
    address: str
    district: str


class AlertDevice(BaseModel):
    id: str
    label: str
    kind: str
    online: bool | None
    battery: int | None


class Incident(BaseModel):
    """The running alarm a later alarm of the client belongs to."""

    id: int
    state: str
    opened_ms: int
    acknowledged_ms: int | None
    acknowledged_by: str | None


class AlertView(BaseModel):
    """An alert as the console shows it (``central.views``)."""

    id: int
    kind: str
    priority: int
    state: str
    detail: str
    count: int
    level: int
    answer_ms: int | None
    version: int
    opened_ms: int
    last_event_ms: int
    acknowledged_ms: int | None
    acknowledged_by: str | None
    resolved_ms: int | None
    outcome: str | None
    incident: Incident | None
    client: AlertClient
    device: AlertDevice | None


class AlertNoteView(BaseModel):
    id: int
    alert_id: int
    text: str
    at_ms: int


class VisitSent(BaseModel):
    id: int
    alert_id: int
    visitor: str
    target_ms: int
    state: str


class VisitArrived(BaseModel):
    id: int
    state: str
    arrived_ms: int | None


# -- operations ---------------------------------------------------------------------------------------


class Liveness(BaseModel):
    status: Literal["ok"]


class ProblemView(BaseModel):
    code: str
    text: str


class ChainHealthView(BaseModel):
    """The whole alarm chain as central's watchdog judged it last."""

    status: Literal["ok", "broken"]
    checked_ms: int
    problems: list[ProblemView]


# -- clients ------------------------------------------------------------------------------------------


class ClientSummary(BaseModel):
    id: int
    name: str
    address: str
    district: str


class ClientPage(BaseModel):
    items: list[ClientSummary]
    next_offset: int | None


class ClientSearch(BaseModel):
    items: list[ClientSummary]


class DeviceStatus(BaseModel):
    id: str
    kind: str
    label: str
    status: Literal["online", "offline", "unknown"]
    battery: int | None
    last_seen_ms: int | None
    signal: int | None
    firmware: str | None


class ScheduledDose(BaseModel):
    dose_id: str
    at: str
    label: str
    device_id: str | None


class ContactView(BaseModel):
    id: int
    name: str
    relation: str
    phone: str | None
    email: str | None
    tel: str | None
    mailto: str | None
    notify_missed_dose: bool
    keyholder: bool
    reachable: str


class ClientRecord(ClientSummary):
    """Who and where, devices, medication schedule, contacts and open alerts."""

    access_notes: str
    care_notes: str
    phone: str
    birth_date: str
    language: str
    gp: str
    pharmacy: str
    conditions: str
    allergies: str
    mobility: str
    pets: str
    key_safe_set: bool = Field(description="whether a key-safe code is on file (the code is revealed apart)")
    devices: list[DeviceStatus]
    schedule: list[ScheduledDose]
    contacts: list[ContactView]
    open_alerts: list[AlertView]


class TimelinePage(BaseModel):
    """Entries of every kind (``type``: alert, dose, call, note, visit, window …), newest first."""

    items: list[dict[str, Any]]
    next_before: str | None


class ClientNoteView(BaseModel):
    type: Literal["client_note"]
    id: int
    at_ms: int
    text: str
    by: str


class AuditEntry(BaseModel):
    id: int
    at_ms: int
    user_id: int | None
    username: str | None
    user_name: str | None
    user_role: str | None
    action: str
    client_id: int | None
    alert_id: int | None
    reason: str | None
    detail: str | None


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_before_id: int | None


# -- maintenance windows ------------------------------------------------------------------------------


class WindowClient(BaseModel):
    id: int
    name: str


class WindowDevice(BaseModel):
    id: str
    label: str | None
    kind: str | None


class WindowView(BaseModel):
    id: int
    client: WindowClient
    device: WindowDevice | None
    starts_ms: int
    ends_ms: int
    reason: str
    state: Literal["upcoming", "active", "past"]
    created_ms: int | None
    created_by: str | None
    ended_by: str | None
    suppressed: int


class WindowList(BaseModel):
    now_ms: int
    items: list[WindowView]


class TargetDevice(BaseModel):
    id: str
    label: str
    kind: str


class TargetClient(BaseModel):
    id: int
    name: str
    devices: list[TargetDevice]


class WindowTargets(BaseModel):
    clients: list[TargetClient]


# -- calls --------------------------------------------------------------------------------------------


class CallView(BaseModel):
    """A live call (``central.calls.signalling.CallHub.view``)."""

    id: str
    direction: str
    kind: str
    state: str
    end_reason: str | None
    client_id: int
    client_name: str
    device_id: str
    nurse_id: int | None
    nurse_name: str | None
    started_ms: int
    answered_ms: int | None
    connected_ms: int | None
    ended_ms: int | None
    restarts: int


class CallRecordView(BaseModel):
    """A call on the client's timeline (``central.calls.store.timeline``)."""

    id: str
    client_id: int
    device_id: str
    direction: str
    kind: str
    state: str
    outcome: str | None
    started_ms: int
    answered_ms: int | None
    connected_ms: int | None
    ended_ms: int | None
    duration_s: float
    nurse_user_id: int | None
    nurse_name: str | None
    restarts: int
    quality: dict[str, Any] | None


class CallsConfigView(BaseModel):
    ice_servers: list[dict[str, Any]]


class ConsentView(BaseModel):
    monitoring_allowed: bool
    auto_answer: bool
    recorded_by: int | None
    recorded_ms: int | None


class VideoCallee(BaseModel):
    client_id: int
    client_name: str
    device_id: str
    consent: ConsentView


# -- editing the client record (central.client_edit_api) ------------------------------------------------

ContactRelation = Literal["informal_carer", "family", "neighbour", "gp", "pharmacy", "other"]
_PHONE = r"^[0-9+()\- ]{0,50}$"


class ClientFieldsEdit(BaseModel):
    """The fields to change (the others are left as they are); "" empties one."""

    model_config = ConfigDict(extra="forbid")

    phone: str | None = Field(default=None, pattern=_PHONE)
    birth_date: str | None = Field(default=None, pattern=r"^(\d{4}-\d{2}-\d{2})?$", description="YYYY-MM-DD")
    language: str | None = Field(default=None, max_length=50)
    gp: str | None = Field(default=None, max_length=300, description="GP's name and phone")
    pharmacy: str | None = Field(default=None, max_length=300)
    conditions: str | None = Field(default=None, max_length=2000)
    allergies: str | None = Field(default=None, max_length=2000)
    mobility: str | None = Field(default=None, max_length=500)
    pets: str | None = Field(default=None, max_length=300)
    access_notes: str | None = Field(default=None, max_length=500, description="how to get in")
    key_safe_code: str | None = Field(default=None, max_length=50, description="write-only: never read back")
    care_notes: str | None = Field(default=None, max_length=5000)

    @field_validator("birth_date")
    @classmethod
    def _a_real_date(cls, value: str | None) -> str | None:
        if value:
            date.fromisoformat(value)  # a ValueError is a 422
        return value


class ClientFieldsChanged(BaseModel):
    changed: list[str] = Field(description="the names of the fields that changed (never their values)")
    key_safe_set: bool


class KeySafeCode(BaseModel):
    code: str = Field(description='the key-safe code ("" when none is set)')


class ContactIn(BaseModel):
    """One contact person; ``id`` names an existing one in a whole-list update."""

    model_config = ConfigDict(extra="forbid")

    id: int | None = Field(default=None, ge=1, le=MAX_ID)
    name: str = Field(min_length=1, max_length=200)
    relation: ContactRelation = "family"
    phone: str = Field(default="", pattern=_PHONE)
    email: str = Field(default="", max_length=200)
    keyholder: bool = False
    reachable: str = Field(default="", max_length=200, description='when reachable: "weekdays after 17:00"')
    notify_missed_dose: bool = False


class ContactList(BaseModel):
    """The whole ordered list: first called first. Missing ids are removed, items without one added."""

    items: list[ContactIn] = Field(max_length=30)


class ContactViews(BaseModel):
    items: list[ContactView]
