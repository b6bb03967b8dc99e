/* carealarm language layer: English and Dutch (care vocabulary), no network, no build step.
 *
 * window.carealarmI18n = { t(key, vars?), lang, setLang(l), onChange(fn), apply(root), widget(el), number(x, digits) }
 * Keys are the English text; a missing translation falls back to English, then to the key itself.
 * Elements with data-i18n="key" get their text replaced; data-i18n-title / -placeholder / -aria-label
 * do the same for those attributes. An element with data-i18n-switch gets the language switch.
 * The choice is kept in localStorage.lang; without one, navigator.language decides.
 */
(function () {
  "use strict";

  const nl = {
    // -- live console (wired by console.js) --
    "Open — waiting for an answer": "Open — wacht op beantwoording",
    "In progress": "In behandeling",
    "Acknowledge": "Aannemen",
    "Video call": "Beeldbellen",
    "Note": "Notitie",
    "Note for this alert (shown on the client's timeline):": "Notitie bij deze melding (komt op de tijdlijn van de cliënt):",
    "Could not add the note": "De notitie kon niet worden opgeslagen",
    "Take call": "Gesprek aannemen",
    "Incoming video call from": "Inkomend beeldgesprek van",
    "Resolve": "Afhandelen",
    "Sign in": "Inloggen",
    "Sign out": "Uitloggen",
    "User name": "Gebruikersnaam",
    "Password": "Wachtwoord",
    "No open alerts.": "Geen openstaande alarmmeldingen.",
    "Nothing in progress.": "Niets in behandeling.",
    "live": "live",
    "connection lost — reconnecting…": "verbinding verbroken — opnieuw verbinden…",
    "Recent rejections": "Recente weigeringen",
    "Period": "Periode",
    "last hour": "afgelopen uur",
    "last 24 hours": "afgelopen 24 uur",
    "last 7 days": "afgelopen 7 dagen",
    "last 30 days": "afgelopen 30 dagen",
    "Messages the service refused, per device: how many of each reason, and the newest with the start of what the device sent. Beyond 20 an hour from one device they are counted, not kept.": "Berichten die de dienst weigerde, per apparaat: hoeveel per reden, en de nieuwste met het begin van wat het apparaat stuurde. Boven 20 per uur van één apparaat worden ze geteld, niet bewaard.",
    "No rejections in this period.": "Geen weigeringen in deze periode.",
    "ALARM CHAIN BROKEN — alarms may not reach this console: use the manual procedure":
      "ALARMKETEN VERBROKEN — alarmen komen mogelijk niet op deze console: volg de handmatige procedure",
    "problem:gateway_down": "de gateway draait niet: alarmen van apparaten worden niet ontvangen",
    "problem:monitor_stuck": "de monitor draait maar verwerkt geen berichten meer: alarmen worden niet getoond",
    "problem:monitor_down": "de monitor draait niet: alarmen worden opgeslagen maar niet getoond of opgeschaald",
    "problem:broker_unreachable": "de gateway bereikt de MQTT-broker niet: apparaten kunnen geen alarm sturen",
    "problem:gateway_not_subscribed": "de broker laat de gateway niet naar de apparaten luisteren: alarmen worden niet ontvangen",
    "problem:events_waiting": "apparaatberichten wachten onverwerkt: alarmen worden mogelijk niet getoond",
    "problem:steps_overdue": "opschalingen zijn te laat: niemand wordt opgeroepen voor onbeantwoorde alarmen",
    "problem:probe_late": "het testalarm is niet op de console aangekomen: de alarmketen is verbroken",
    "problem:probe_not_sent": "het testalarm kan niet worden verstuurd: de broker is niet bereikbaar",
    "problem:console_offline": "deze console heeft geen verbinding met de server van de zorgcentrale: nieuwe alarmen worden hier niet getoond",
    "problem:central_down": "de server van de zorgcentrale (central) draait niet: consoles tonen niets nieuws",
    "problem:database_unreachable": "de database is niet bereikbaar: alarmen kunnen niet worden opgeslagen",
    "CRITICAL": "KRITIEK",
    "HIGH": "HOOG",
    "NORMAL": "NORMAAL",
    "LOW": "LAAG",
    "Talked to client": "Cliënt gesproken",
    "Nurse sent": "Verpleegkundige gestuurd",
    "Emergency services called": "Hulpdiensten gealarmeerd (112)",
    "False alarm": "Loos alarm",
    "Other": "Anders",
    "escalated · level": "geëscaleerd · niveau",
    "Waiting": "Wachttijd",
    "Answered in": "Beantwoord in",
    "Client": "Cliënt",
    "Device": "Apparaat",
    "What": "Wat",
    "Taken by": "Aangenomen door",
    "Priority": "Prioriteit",
    "open": "open",
    "in progress": "in behandeling",
    "alert": "alarmmelding",
    "alerts": "alarmmeldingen",
    // -- live console: a re-raised alarm, a running incident, the sound, maintenance windows --
    "×{count} · last {time}": "×{count} · laatst {time}",
    "Client already being helped — alarm in progress by {name} since {time}":
      "Cliënt wordt al geholpen — alarm in behandeling bij {name} sinds {time}",
    "Pressed while an earlier alarm was in progress (by {name} since {time}); that alarm is closed now":
      "Gedrukt terwijl een eerder alarm in behandeling was (bij {name} sinds {time}); dat alarm is inmiddels afgehandeld",
    "Sound is off — click anywhere to hear alarms": "Geluid staat uit — klik ergens om alarmen te horen",
    "Maintenance windows": "Meldingspauzes",
    "Device-state and dose alerts of these clients and devices are held back and recorded; alarms always come through.":
      "Apparaat- en medicatiemeldingen van deze cliënten en apparaten worden vastgelegd maar niet gemeld; alarmen komen altijd door.",
    "Reason": "Reden",
    "Until": "Tot",
    "From (empty: now)": "Van (leeg: nu)",
    "Held back": "Tegengehouden",
    "End": "Beëindigen",
    "No maintenance windows.": "Geen meldingspauzes.",
    "Add a maintenance window": "Meldingspauze toevoegen",
    "Add window": "Pauze toevoegen",
    "Whole client": "Hele cliënt",
    "Choose a client": "Kies een cliënt",
    "in hospital": "in het ziekenhuis",
    "planned": "gepland",
    "Window: {reason}": "Pauze: {reason}",
    "End this maintenance window now? Alerts come through again from now on.":
      "Deze meldingspauze nu beëindigen? Meldingen komen vanaf nu weer door.",
    "Could not end the window": "De meldingspauze kon niet worden beëindigd",
    "Could not add the window": "De meldingspauze kon niet worden toegevoegd",
    // -- people and roles --
    "care_nurse": "verpleegkundige zorgcentrale",
    "district_nurse": "wijkverpleegkundige",
    "supervisor": "teamleider",
    "admin": "beheerder",
    "informal_carer": "mantelzorger",
    "gp": "huisarts",
    "pharmacy": "apotheek",
    "family": "familie",
    "alarm_button": "alarmknop",
    "dispenser": "medicijndispenser",
    "video": "beeldscherm (video)",
    // -- navigation, shared --
    "Console": "Meldkamer",
    "Reports": "Rapportages",
    "Management": "Beheer",
    "Language": "Taal",
    "Save": "Opslaan",
    "Add": "Toevoegen",
    "Delete": "Verwijderen",
    "Edit": "Wijzigen",
    "Cancel": "Annuleren",
    "Name": "Naam",
    "Address": "Adres",
    "District": "Wijk",
    "Role": "Rol",
    "E-mail": "E-mail",
    "Label": "Omschrijving",
    "Kind": "Soort",
    "Online": "Online",
    "Offline": "Offline",
    "unknown": "onbekend",
    "You are not allowed to see this page.": "U heeft geen toegang tot deze pagina.",
    "Unknown user name or wrong password.": "Onbekende gebruikersnaam of onjuist wachtwoord.",
    // -- reports --
    "carealarm reports": "carealarm rapportages",
    "From": "Van",
    "To": "Tot en met",
    "Show": "Toon",
    "Download CSV": "CSV downloaden",
    "No data in this period.": "Geen gegevens in deze periode.",
    "Alarm answer times": "Aannametijden alarmmeldingen",
    "Share of alarms answered within 60 s, per day": "Aandeel alarmmeldingen binnen 60 s aangenomen, per dag",
    "target {pct}": "norm {pct}",
    "Day": "Dag",
    "Nurse": "Verpleegkundige",
    "all nurses": "alle verpleegkundigen",
    "Answered": "Aangenomen",
    "Unanswered": "Niet aangenomen",
    "Within 60 s": "Binnen 60 s",
    "Within 180 s": "Binnen 180 s",
    "Median": "Mediaan",
    "p90": "p90",
    "Medication adherence": "Therapietrouw (medicatie-inname)",
    "Adherence per client": "Therapietrouw per cliënt",
    "Due": "Gepland",
    "Taken": "Ingenomen",
    "Taken late": "Te laat ingenomen",
    "Missed": "Gemist",
    "Pending": "Nog open",
    "Adherence": "Therapietrouw",
    "On time": "Op tijd",
    "Device availability": "Bereikbaarheid apparaten",
    "Share of time online per device": "Aandeel tijd online per apparaat",
    "Time online": "Tijd online",
    "Time offline": "Tijd offline",
    "No report": "Geen melding",
    "Changes": "Wisselingen",
    // -- management --
    "carealarm management": "carealarm beheer",
    "Clients": "Cliënten",
    "Devices": "Apparaten",
    "Medication schedule": "Medicatieschema",
    "Duty roster": "Dienstrooster",
    "Users": "Gebruikers",
    "New client": "Nieuwe cliënt",
    "Provision device": "Apparaat aanmelden",
    "Device id": "Apparaat-id",
    "Password for the device (shown once): ": "Wachtwoord voor het apparaat (eenmalig getoond): ",
    "Dose id": "Dosis-id",
    "Time": "Tijdstip",
    "Medication": "Medicatie",
    "Add dose": "Dosis toevoegen",
    "Send to dispenser": "Naar dispenser sturen",
    "Dispenser": "Dispenser",
    "sent, awaiting confirmation": "verzonden, wacht op bevestiging",
    "confirmed by the dispenser": "bevestigd door de dispenser",
    "refused by the dispenser": "geweigerd door de dispenser",
    "failed on the dispenser": "mislukt op de dispenser",
    "not sent: broker unreachable": "niet verzonden: berichtenserver onbereikbaar",
    "no dispenser for this client": "geen dispenser bij deze cliënt",
    "never sent": "nog niet verzonden",
    "Starts": "Begint",
    "Ends": "Eindigt",
    "Person": "Medewerker",
    "New user": "Nieuwe gebruiker",
    "Display name": "Weergavenaam",
    "Password (at least 10 characters)": "Wachtwoord (minstens 10 tekens)",
    "Saved.": "Opgeslagen.",
    // -- reports: what each figure means (the English is the text the API sends) --
    "Cancelled by client": "Door cliënt geannuleerd",
    "Not in schedule": "Niet in schema",
    "Service down": "Dienst uit de lucht",
    "A nurse's row counts the alarms that nurse acknowledged. Unanswered alarms belong to no nurse: they are on the day's row only.":
      "De regel van een verpleegkundige telt de alarmen die zij of hij aannam. Niet aangenomen alarmen horen bij geen verpleegkundige: die staan alleen op de regel van de dag.",
    "Alarms a nurse acknowledged.": "Alarmen die een verpleegkundige heeft aangenomen.",
    "Alarms nobody acknowledged: still waiting, or closed without being acknowledged.":
      "Alarmen die niemand heeft aangenomen: ze wachten nog, of zijn afgesloten zonder dat iemand ze aannam.",
    "Alarms the client cancelled on the device within the pre-alarm window, before anyone answered. They are no call to answer and are left out of every other figure.":
      "Alarmen die de cliënt binnen de vooralarmtijd op het apparaat annuleerde, voordat iemand aannam. Het zijn geen oproepen om aan te nemen; ze tellen in geen ander cijfer mee.",
    "Alarms acknowledged within 60 s of arriving, out of all alarms except those cancelled by the client. An alarm not acknowledged within 60 s counts as a miss, also when it was never acknowledged or was closed without it; one waiting for less than 60 s is not counted yet.":
      "Alarmen die binnen 60 s na binnenkomst zijn aangenomen, als deel van alle alarmen behalve de door de cliënt geannuleerde. Een alarm dat niet binnen 60 s is aangenomen telt als gemist, ook als het nooit is aangenomen of zonder aanname is afgesloten; een alarm dat nog geen 60 s wacht telt nog niet mee.",
    "The same for 180 s: acknowledged within 180 s, out of all alarms except those cancelled by the client.":
      "Hetzelfde voor 180 s: binnen 180 s aangenomen, als deel van alle alarmen behalve de door de cliënt geannuleerde.",
    "Half of the answered alarms were acknowledged within this time.": "De helft van de aangenomen alarmen werd binnen deze tijd aangenomen.",
    "90 % of the answered alarms were acknowledged within this time.": "90 % van de aangenomen alarmen werd binnen deze tijd aangenomen.",
    "Doses due in the period: the scheduled ones and the ones only the dispenser reported. A dose removed from the schedule before it was due is not counted.":
      "Doses die in de periode gepland waren: die uit het medicatieschema en die alleen de dispenser meldde. Een dosis die vóór het innametijdstip uit het schema is gehaald telt niet mee.",
    "Taken within the grace period after the due time.": "Ingenomen binnen de marge na het innametijdstip.",
    "Taken after the grace period, having been counted as missed first.": "Ingenomen na afloop van de marge, nadat de dosis eerst als gemist telde.",
    "Not taken by the end of the grace period, or reported missed by the dispenser, and not taken since.":
      "Niet ingenomen bij het einde van de marge, of door de dispenser als gemist gemeld, en sindsdien niet ingenomen.",
    "Due, but the grace period has not ended yet: not judged.": "Gepland, maar de marge is nog niet voorbij: nog niet beoordeeld.",
    "Of the due doses, those the schedule does not have: known only from the dispenser's reports or its missed-dose alerts.":
      "Van de geplande doses, die niet in het schema staan: alleen bekend uit wat de dispenser meldde of uit de meldingen van gemiste doses die daarop volgden.",
    "(Taken + taken late) ÷ (taken + taken late + missed). Pending doses are left out.":
      "(Ingenomen + te laat ingenomen) ÷ (ingenomen + te laat ingenomen + gemist). Doses die nog open staan tellen niet mee.",
    "Taken ÷ (taken + taken late + missed).": "Ingenomen ÷ (ingenomen + te laat ingenomen + gemist).",
    "Time online ÷ (time online + time offline). Time without a report and time the service itself was down are left out.":
      "Tijd online ÷ (tijd online + tijd offline). Tijd zonder melding en tijd dat de dienst zelf uit de lucht was tellen niet mee.",
    "Time the device was connected, from its status reports and its current state.":
      "Tijd dat het apparaat verbonden was, volgens zijn statusmeldingen en zijn huidige toestand.",
    "Time the device was disconnected (its connection dropped or it signed off).":
      "Tijd dat het apparaat niet verbonden was (verbinding verbroken of afgemeld).",
    "Time from when the device was added until its first status report.":
      "Tijd vanaf het aanmelden van het apparaat tot zijn eerste statusmelding.",
    "Time the service itself was down (no gateway running, or none heard from for more than two heartbeat intervals). The device's state is not known then: it counts neither for nor against the device.":
      "Tijd dat de dienst zelf uit de lucht was (geen gateway actief, of langer dan twee hartslagintervallen niets van gehoord). De toestand van het apparaat is dan onbekend: die tijd telt niet voor en niet tegen het apparaat.",
    "How often the device went online or offline in the period.": "Hoe vaak het apparaat in de periode online of offline ging.",
    // -- the video call page (call.js) --
    "video call": "beeldgesprek",
    "Look in (monitoring)": "Meekijken (monitoring)",
    "Take the call": "Gesprek aannemen",
    "Mute": "Microfoon uit",
    "Unmute": "Microfoon aan",
    "Camera off": "Camera uit",
    "Camera on": "Camera aan",
    "Hang up": "Ophangen",
    "Loading…": "Laden…",
    "Ready to call.": "Klaar om te bellen.",
    "No camera or microphone: check the browser's permissions.": "Geen camera of microfoon: controleer de toestemmingen van de browser.",
    "Incoming call from the client.": "Inkomend gesprek van de cliënt.",
    "Ringing…": "Gaat over…",
    "Connecting…": "Verbinden…",
    "Connected.": "Verbonden.",
    "The connection was interrupted; reconnecting…": "De verbinding werd onderbroken; opnieuw verbinden…",
    "MONITORING — the client's device shows that you are looking in": "MONITORING — het apparaat van de cliënt laat zien dat u meekijkt",
    "good": "goed",
    "fair": "redelijk",
    "poor": "slecht",
    "Lost the connection to the care station; retrying…": "Verbinding met de meldkamer verloren; opnieuw proberen…",
    "Call ended": "Gesprek beëindigd",
    "The client declined the call.": "De cliënt heeft het gesprek geweigerd.",
    "No answer.": "Geen antwoord.",
    "The video connection could not be set up.": "De beeldverbinding kon niet worden opgezet.",
    "You hung up.": "U hebt opgehangen.",
    "The client hung up.": "De cliënt heeft opgehangen.",
    "This page lost its connection.": "Deze pagina verloor de verbinding.",
    "The client's device is no longer reachable.": "Het apparaat van de cliënt is niet meer bereikbaar.",
    "The client's device could not be reached.": "Het apparaat van de cliënt was niet bereikbaar.",
    "The care-station server stopped.": "De server van de meldkamer is gestopt.",
    "The connection to the care station was lost.": "De verbinding met de meldkamer is verbroken.",
    "Another nurse has taken this call, or it is over.": "Een andere verpleegkundige heeft dit gesprek aangenomen, of het is voorbij.",
    "{fps} fps · loss {loss} % · RTT {rtt}": "{fps} fps · verlies {loss} % · RTT {rtt}",
    // -- the client record (client.js) --
    "client record": "cliëntdossier",
    "← Console": "← Meldkamer",
    "Find a client": "Cliënt zoeken",
    "Search": "Zoeken",
    "Part of the client's name": "Deel van de naam van de cliënt",
    "No clients found.": "Geen cliënten gevonden.",
    "Why do you open this record?": "Waarom opent u dit dossier?",
    "No alert of yours concerns this client. Your reason is recorded in the audit log.": "Geen melding van u betreft deze cliënt. Uw reden wordt vastgelegd in het auditlogboek.",
    "Reason (at least 5 characters)": "Reden (minstens 5 tekens)",
    "Open the record": "Dossier openen",
    "Please give a reason of at least 5 characters.": "Geef een reden van minstens 5 tekens.",
    "Who and where": "Wie en waar",
    "Access to the home": "Toegang tot de woning",
    "Care notes": "Zorgnotities",
    "Open alerts": "Open meldingen",
    "Status": "Status",
    "Battery": "Batterij",
    "Last seen": "Laatst gezien",
    "never": "nooit",
    "No medication schedule.": "Geen medicatieschema.",
    "Contact persons": "Contactpersonen",
    "No contact persons.": "Geen contactpersonen.",
    "Call": "Bellen",
    "Care note": "Zorgnotitie",
    "What happened, what was agreed…": "Wat er gebeurde, wat er is afgesproken…",
    "Add note": "Notitie toevoegen",
    "The note was not saved: ": "De notitie is niet opgeslagen: ",
    "Timeline": "Tijdlijn",
    "Nothing on the timeline yet.": "Nog niets op de tijdlijn.",
    "Older entries": "Oudere items",
    "You are not signed in. Sign in on the console first.": "U bent niet aangemeld. Meld u eerst aan op de meldkamer.",
    "You may not open this record: ": "U mag dit dossier niet openen: ",
    "This client does not exist.": "Deze cliënt bestaat niet.",
    "Something went wrong: ": "Er ging iets mis: ",
    "by": "door",
    "online": "online",
    "offline": "offline",
    "Note on an alert": "Notitie bij een melding",
    "not answered": "niet beantwoord",
    "whole client": "hele cliënt",
    "running": "loopt",
    "as planned": "zoals gepland",
    "device-state and dose alerts held back; alarms always come through": "apparaat- en medicatiemeldingen tegengehouden; alarmen komen altijd door",
    "ended": "beëindigd",
    "ended early": "eerder beëindigd",
    "Alarm pendant": "Alarmhanger",
    "Medication dispenser": "Medicijndispenser",
    "Video device": "Beeldbelapparaat",
    "informal carer": "mantelzorger",
    "GP": "huisarts",
    "other": "overig",
    "Alarm": "Alarm",
    "Missed dose": "Medicatie niet ingenomen",
    "Device offline": "Apparaat offline",
    "Battery low": "Batterij bijna leeg",
    "Dispenser nearly empty": "Dispenser bijna leeg",
    "Visit overdue": "Bezoek te laat",
    "Dispenser error": "Storing dispenser",
    "Dispenser opened or tampered with": "Dispenser geopend of gemanipuleerd",
    "Power lost": "Stroom uitgevallen",
    "Device fault": "Apparaatstoring",
    "resolved": "afgehandeld",
    "false alarm": "loos alarm",
    "reassured": "gerustgesteld",
    "contact attended": "contactpersoon ter plaatse",
    "district nurse attended": "wijkverpleging ter plaatse",
    "ambulance": "ambulance",
    "fire service": "brandweer",
    "no response, visit": "geen reactie, bezoek",
    "talked to the client": "cliënt gesproken",
    "nurse sent": "zorgverlener gestuurd",
    "emergency services": "hulpdiensten (112)",
    "cancelled by the client": "door cliënt geannuleerd",
    "back online": "weer online",
    "power restored": "stroom terug",
    "battery ok": "batterij in orde",
    "dose taken late": "medicatie te laat ingenomen",
    "nurse arrived": "zorgverlener aangekomen",
    "taken": "ingenomen",
    "missed": "niet ingenomen",
    "taken late": "te laat ingenomen",
    "Video monitoring": "Beeldmonitoring",
    "by the care station": "door de meldkamer",
    "by the client": "door de cliënt",
    "on the way": "onderweg",
    "arrived": "aangekomen",
    "cancelled": "geannuleerd",
    "answered in {s} s": "beantwoord in {s} s",
    "Medication: {id}": "Medicatie: {id}",
    "Dispenser reports: {id}": "Dispenser meldt: {id}",
    "{outcome}, {d} s talked": "{outcome}, {d} s gesproken",
    "Visit: {who}": "Bezoek: {who}",
    "Maintenance window: {reason}": "Meldingspauze: {reason}",
    "Maintenance window over: {reason}": "Meldingspauze voorbij: {reason}",
    "device {d}": "apparaat {d}",
    "until {t}": "tot {t}",
    "ended early by {by}": "eerder beëindigd door {by}",
    "Held back by a maintenance window: {kind}": "Tegengehouden door een meldingspauze: {kind}",
    // -- audit log page (audit.js) --
    "carealarm audit log": "carealarm auditlog",
    "Audit log": "Auditlog",
    "everyone": "iedereen",
    "every client": "alle cliënten",
    "Action": "Handeling",
    "every action": "alle handelingen",
    "Who looked at what": "Wie heeft wat ingezien",
    "When": "Wanneer",
    "Details": "Details",
    "No audit rows match these filters.": "Geen auditregels bij deze filters.",
    "Older": "Ouder",
    "{n} rows shown": "{n} regels getoond",
    // -- closing an alarm and the handover (closing.js) --
    "Close alarm": "Alarm afsluiten",
    "Close alarm…": "Alarm afsluiten…",
    "Outcome (choose one)": "Afloop (kies er één)",
    "Reassured — no help needed": "Gerustgesteld — geen hulp nodig",
    "Contact attended": "Contactpersoon is gegaan",
    "District nurse attended": "Wijkverpleging is gegaan",
    "Ambulance": "Ambulance",
    "Fire service": "Brandweer",
    "No response — visit": "Geen reactie — bezoek",
    "Closing note (required): what happened, what was done": "Afsluitende notitie (verplicht): wat er gebeurde, wat er is gedaan",
    "Note on this alert": "Notitie bij deze melding",
    "Note (shown on the client's timeline)": "Notitie (komt op de tijdlijn van de cliënt)",
    "Choose an outcome.": "Kies een afloop.",
    "Write a closing note: what happened, what was done.": "Schrijf een afsluitende notitie: wat er gebeurde, wat er is gedaan.",
    "Could not close the alarm": "Het alarm kon niet worden afgesloten",
    "another nurse changed it first": "een collega was u voor",
    "Closed: {client} — {outcome}. Undo for {s} s.": "Afgesloten: {client} — {outcome}. Nog {s} s ongedaan te maken.",
    "Undo": "Ongedaan maken",
    "Could not undo": "Kon niet ongedaan worden gemaakt",
    "Could not acknowledge": "Kon niet worden aangenomen",
    "Dismiss": "Sluiten",
    "Handover — alarms of this shift": "Overdracht — alarmen van deze dienst",
    "last 4 hours": "afgelopen 4 uur",
    "last 8 hours": "afgelopen 8 uur",
    "last 12 hours": "afgelopen 12 uur",
    "Refresh": "Vernieuwen",
    "Opened": "Binnengekomen",
    "Closed": "Afgesloten",
    "Outcome": "Afloop",
    "Notes": "Notities",
    "No alarms in this period.": "Geen alarmen in deze periode.",
    "Could not load the handover": "De overdracht kon niet worden geladen",
    "the service": "de dienst",
    "Back online": "Weer online",
    "Power restored": "Stroom hersteld",
    "Battery ok": "Batterij in orde",
    "Dose taken late": "Dosis te laat ingenomen",
    "Nurse arrived": "Verpleegkundige aangekomen",
    "Device removed": "Apparaat verwijderd",
    // -- console sound and attention (sound.js) --
    "Mute sound": "Geluid dempen",
    "Volume": "Volume",
    "Muted": "Gedempt",
    "Muted — alarm waiting": "Gedempt — alarm wacht",
    "Turn on desktop alerts": "Bureaubladmeldingen aanzetten",
    "Desktop alerts on": "Bureaubladmeldingen aan",
    "Desktop alerts blocked": "Bureaubladmeldingen geblokkeerd",
    "New alarm": "Nieuw alarm",
    "New alarm: {what} — {client}": "Nieuw alarm: {what} — {client}",
    "Alarm raised again: {what} — {client}": "Opnieuw alarm: {what} — {client}",
    // -- the client record's edit mode and key safe (client-edit.js) --
    "Edit record": "Dossier bewerken",
    "Edit the record": "Het dossier bewerken",
    "Phone": "Telefoon",
    "Date of birth": "Geboortedatum",
    "Family doctor (GP)": "Huisarts",
    "Name and phone": "Naam en telefoonnummer",
    "Pharmacy": "Apotheek",
    "Conditions": "Aandoeningen",
    "Allergies": "Allergieën",
    "Mobility": "Mobiliteit",
    "Pets": "Huisdieren",
    "How to get in: which door, where the key safe is": "Hoe kom je binnen: welke deur, waar hangt de sleutelkluis",
    "Key-safe code": "Code sleutelkluis",
    "Unchanged — type a new code to replace it": "Ongewijzigd — typ een nieuwe code om hem te vervangen",
    "Remove the code": "Code verwijderen",
    "Contact persons (called in this order)": "Contactpersonen (in deze volgorde bellen)",
    "Add a contact person": "Contactpersoon toevoegen",
    "Reveal code": "Code tonen",
    "set": "ingesteld",
    "not set": "niet ingesteld",
    "Keyholder": "Sleutelhouder",
    "Reachable": "Bereikbaar",
    "When reachable": "Wanneer bereikbaar",
    "Gets missed-dose messages": "Krijgt berichten over gemiste medicatie",
    "Relation": "Relatie",
    "Move up": "Omhoog",
    "Move down": "Omlaag",
    "Remove": "Verwijderen",
    "new contact": "nieuwe contactpersoon",
    "neighbour": "buurman/buurvrouw",
    "Every contact person needs a name.": "Elke contactpersoon heeft een naam nodig.",
    "Not saved: ": "Niet opgeslagen: ",
    "Shown for one minute; your look is recorded in the audit log.": "Eén minuut zichtbaar; dat u keek staat in het auditlog.",
    "The code was not revealed: ": "De code is niet getoond: ",
  };

  // English keys are their own text, except the codes the API sends (roles, device kinds, relations).
  const en = {
    "care_nurse": "care-station nurse",
    "district_nurse": "district nurse",
    "supervisor": "supervisor",
    "admin": "administrator",
    "informal_carer": "informal carer",
    "gp": "GP",
    "pharmacy": "pharmacy",
    "family": "family",
    "alarm_button": "alarm button",
    "dispenser": "medication dispenser",
    "video": "video screen",
  };

  const dictionaries = { en: en, nl: nl };
  const names = { en: "English", nl: "Nederlands" };
  const listeners = [];

  function pick() {
    let stored = null;
    try { stored = window.localStorage.getItem("lang"); } catch (e) { /* storage may be disabled */ }
    if (stored && dictionaries[stored]) return stored;
    const nav = String(navigator.language || "en").slice(0, 2).toLowerCase();
    return dictionaries[nav] ? nav : "en";
  }

  let lang = pick();

  function t(key, vars) {
    const table = dictionaries[lang] || {};
    let text = Object.prototype.hasOwnProperty.call(table, key) ? table[key] : key;
    if (vars) {
      for (const name of Object.keys(vars)) text = text.split("{" + name + "}").join(String(vars[name]));
    }
    return text;
  }

  function apply(root) {
    const scope = root || document;
    scope.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
    for (const attr of ["title", "placeholder", "aria-label"]) {
      scope.querySelectorAll("[data-i18n-" + attr + "]").forEach((el) => {
        el.setAttribute(attr, t(el.getAttribute("data-i18n-" + attr)));
      });
    }
  }

  function setLang(next) {
    if (!dictionaries[next] || next === lang) return;
    lang = next;
    try { window.localStorage.setItem("lang", next); } catch (e) { /* kept for this page only */ }
    document.documentElement.lang = next;
    apply(document);
    document.querySelectorAll("select.lang-switch").forEach((s) => { s.value = next; });
    listeners.forEach((fn) => fn(next));
  }

  function widget(container) {
    const select = document.createElement("select");
    select.className = "lang-switch";
    select.setAttribute("aria-label", "Language / Taal");
    for (const code of Object.keys(dictionaries)) {
      const option = document.createElement("option");
      option.value = code;
      option.textContent = names[code];
      select.appendChild(option);
    }
    select.value = lang;
    select.addEventListener("change", () => setLang(select.value));
    container.appendChild(select);
    return select;
  }

  function number(value, digits) {
    return new Intl.NumberFormat(lang === "nl" ? "nl-NL" : "en-GB", {
      minimumFractionDigits: digits || 0, maximumFractionDigits: digits || 0,
    }).format(value);
  }

  window.carealarmI18n = {
    t: t,
    get lang() { return lang; },
    setLang: setLang,
    onChange: (fn) => listeners.push(fn),
    apply: apply,
    widget: widget,
    number: number,
  };

  function start() {
    document.documentElement.lang = lang;
    apply(document);
    document.querySelectorAll("[data-i18n-switch]").forEach(widget);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
