/* carealarm console attention: the sounds, the reminders of an alarm nobody has taken, volume and mute,
 * desktop notifications while the tab is in the background, and the screen-reader announcement of a new
 * alarm. console.js tells it what the queue holds (queue()), a ringing call (call()), and when a nurse signs
 * in or out (start(), stop()); everything else happens here.
 *
 * window.carealarmSound, read by tests and by a support engineer in the browser's console:
 *   played, last   the sounds of news, as before this module: a new alarm, an alarm raised again, a call
 *                  ("new alarm" | "raised again" | "call"). Reminders do not count here, so a test that
 *                  waits for the sound of a press never mistakes a reminder for it.
 *   audible        the browser lets the page sound (false until the nurse has touched the page)
 *   repeats        reminders of alarms still open; urgency: 0, 1 or 2 thresholds passed by the alarm waiting
 *                  longest (0 when none waits); tone: the tone last played
 *   sounds         every sound (news, reminders, alert chimes); history: the last 50, {why, tone, at}
 *   volume, muted  the nurse's choice (10..100; mute), kept in localStorage
 *   notifications  desktop notifications shown; announced: screen-reader announcements made
 *   configure({repeatMs, urgentAfterS}) shortens the clock for a test; returns the settings in force
 *
 * Mute silences the speaker only: the rows, the banners and a red "muted" mark in the header stay, and the
 * volume slider cannot go below 10 % (a slider at 0 would be a mute that shows nothing).
 */
(function () {
  "use strict";

  const T = (key, vars) => (window.carealarmI18n ? window.carealarmI18n.t(key, vars) : key);
  const $ = (id) => document.getElementById(id);

  // How often an open alarm sounds again, and when its tone turns more urgent: the UK TEC Quality answer
  // targets (97.5 % of alarm calls answered within 60 s, 99 % within 180 s), counted from the first press.
  const settings = { repeatMs: 10000, urgentAfterS: [60, 180] };
  const MIN_VOLUME = 10;
  const DEFAULT_VOLUME = 50; // plays the alarm at the level the console always had (gain 0.2)

  // Each tone: oscillator wave, gain at full volume, notes as [start s, Hz, length s].
  const TONES = {
    alarm: { wave: "sine", gain: 0.4, notes: [[0, 880, 0.2], [0.25, 660, 0.2], [0.5, 880, 0.2]] },
    alarm_60: { wave: "triangle", gain: 0.5,
      notes: [[0, 988, 0.14], [0.17, 740, 0.14], [0.34, 988, 0.14], [0.51, 740, 0.14], [0.68, 988, 0.14]] },
    alarm_180: { wave: "square", gain: 0.35,
      notes: [[0, 1175, 0.09], [0.11, 880, 0.09], [0.22, 1175, 0.09], [0.33, 880, 0.09],
        [0.44, 1175, 0.09], [0.55, 880, 0.09], [0.66, 1175, 0.09], [0.77, 880, 0.09]] },
    visit: { wave: "sine", gain: 0.3, notes: [[0, 740, 0.18], [0.25, 740, 0.18]] },
    dose: { wave: "sine", gain: 0.25, notes: [[0, 659, 0.15], [0.2, 880, 0.25]] },
    device: { wave: "sine", gain: 0.25, notes: [[0, 523, 0.15], [0.2, 392, 0.25]] },
    call: { wave: "sine", gain: 0.3, notes: [[0, 660, 0.15], [0.18, 880, 0.15], [0.36, 660, 0.15], [0.54, 880, 0.15]] },
  };

  // What each category does. tones: by urgency (thresholds passed); repeat: sounds again while open;
  // tell: announced to screen readers and notified on the desktop. A critical (priority 1) alert is an
  // alarm whatever its kind; low-priority alerts (priority 4: a battery, a tablet offline) stay silent, so
  // the sound keeps meaning "someone needs you".
  const CATEGORIES = {
    alarm: { tones: ["alarm", "alarm_60", "alarm_180"], repeat: true, tell: true },
    visit: { tones: ["visit"], repeat: false, tell: false },
    dose: { tones: ["dose"], repeat: false, tell: false },
    device: { tones: ["device"], repeat: false, tell: false },
  };
  const KIND_CATEGORY = {
    alarm: "alarm", visit_overdue: "visit", missed_dose: "dose", dispense_error: "dose", stock_low: "dose",
  };
  const SILENT_PRIORITY = 4;
  const category = (a) => (a.priority === 1 ? "alarm" : KIND_CATEGORY[a.kind] || "device");

  function stored(key, fallback) {
    try { const v = window.localStorage.getItem(key); return v === null ? fallback : v; }
    catch (_) { return fallback; }
  }
  function store(key, value) {
    try { window.localStorage.setItem(key, String(value)); } catch (_) { /* kept for this page only */ }
  }
  const clampVolume = (v) => Math.min(100, Math.max(MIN_VOLUME, Math.round(Number(v)) || DEFAULT_VOLUME));

  const pub = {
    played: 0, last: null, audible: null,
    repeats: 0, urgency: 0, tone: null, sounds: 0, history: [],
    volume: clampVolume(stored("carealarm.volume", DEFAULT_VOLUME)),
    muted: stored("carealarm.muted", "false") === "true",
    notifications: 0, announced: 0, announcement: "",
    configure, start, stop, queue, call, unlock,
  };
  window.carealarmSound = pub;

  let open = [];          // the open queue as console.js last showed it
  let offsetMs = 0;       // server time minus browser time
  let lastAlarmMs = 0;    // when an alarm last sounded (news or reminder): the reminder clock
  let lastLevel = -1;     // the urgency it sounded at
  const notified = new Map(); // alert id -> its desktop Notification (one per alarm)
  let audio = null;

  function configure(options) {
    if (options && options.repeatMs) settings.repeatMs = Number(options.repeatMs);
    if (options && options.urgentAfterS) settings.urgentAfterS = options.urgentAfterS.map(Number);
    return { ...settings };
  }

  // -- the speaker -------------------------------------------------------------------------------------

  // One audio context for the page. A browser keeps it suspended until the nurse has touched the page (a
  // console reloaded with a remembered sign-in): then a banner says the sound is off, and any click or key
  // turns it on.
  function unlock() {
    if (!audio) {
      const Ctx = window.AudioContext || window.webkitAudioContext;
      if (!Ctx) return null;
      audio = new Ctx();
      audio.onstatechange = showState;
    }
    if (audio.state === "suspended") audio.resume().then(showState, showState);
    return audio;
  }

  function play(toneName, why) {
    pub.sounds += 1;
    pub.tone = toneName;
    pub.history.push({ why, tone: toneName, at: Date.now() });
    if (pub.history.length > 50) pub.history.shift();
    if (!pub.muted) {
      try {
        const ctx = unlock();
        if (ctx) {
          const tone = TONES[toneName];
          const peak = tone.gain * (pub.volume / 100);
          for (const [start, freq, length] of tone.notes) {
            const o = ctx.createOscillator(); const g = ctx.createGain();
            const t0 = ctx.currentTime + start;
            o.type = tone.wave; o.frequency.value = freq; o.connect(g); g.connect(ctx.destination);
            g.gain.setValueAtTime(peak, t0);
            g.gain.linearRampToValueAtTime(0, t0 + length); // no click at the end of a note
            o.start(t0); o.stop(t0 + length);
          }
        }
      } catch (_) { /* no audio device: the counters, the rows and the banners remain */ }
    }
    showState();
  }

  // -- the queue ---------------------------------------------------------------------------------------

  // The alarms that sound again, and how urgent the one waiting longest is.
  function waiting(nowMs) {
    const alarms = open.filter((a) => CATEGORIES[category(a)].repeat);
    if (!alarms.length) return { alarms, level: 0 };
    const longest = (nowMs + offsetMs - Math.min(...alarms.map((a) => a.opened_ms))) / 1000;
    return { alarms, level: settings.urgentAfterS.filter((s) => longest >= s).length };
  }

  const alarmTone = (level) => CATEGORIES.alarm.tones[Math.min(level, CATEGORIES.alarm.tones.length - 1)];

  // console.js, after each render: the open alerts in order, those that are news to this console (new, or
  // raised again), and which of those it had shown before.
  function queue(openAlerts, news, seenBefore, clockOffsetMs) {
    open = openAlerts;
    offsetMs = clockOffsetMs || 0;
    const now = Date.now();
    const alarms = news.filter((a) => a.priority === 1);
    if (alarms.length) {
      const again = alarms.some(seenBefore);
      pub.played += 1;
      pub.last = again ? "raised again" : "new alarm";
      const { level } = waiting(now);
      pub.urgency = level;
      lastAlarmMs = now;
      lastLevel = level;
      play(alarmTone(level), pub.last);
      tell(alarms, seenBefore);
    } else {
      const chime = news.filter((a) => !seenBefore(a) && a.priority < SILENT_PRIORITY)
        .sort((x, y) => x.priority - y.priority)[0];
      if (chime) play(CATEGORIES[category(chime)].tones[0], "new alert");
    }
    // Taken, resolved or gone: its desktop notification goes too.
    const ids = new Set(open.map((a) => a.id));
    for (const [id, n] of notified) if (!ids.has(id)) { n.close(); notified.delete(id); }
    remind();
    showState(); // the red "muted" mark follows whether an alarm is open
  }

  // Every quarter second: an alarm still open sounds again every repeatMs, and at once when it passes a
  // threshold. One sound for all waiting alarms (the tone of the one waiting longest), not one each.
  function remind() {
    const now = Date.now();
    const { alarms, level } = waiting(now);
    pub.urgency = level;
    if (!alarms.length) { lastLevel = -1; return; }
    if (now - lastAlarmMs >= settings.repeatMs || level > lastLevel) {
      lastAlarmMs = now;
      lastLevel = level;
      pub.repeats += 1;
      play(alarmTone(level), "reminder");
    }
  }

  function call() {
    pub.played += 1;
    pub.last = "call";
    play("call", "call");
  }

  // -- screen readers and the desktop ------------------------------------------------------------------

  function tell(alarms, seenBefore) {
    const lines = alarms.map((a) => T(seenBefore(a) ? "Alarm raised again: {what} — {client}" : "New alarm: {what} — {client}",
      { what: T(a.detail), client: a.client.name }));
    announce(lines.join(". "));
    for (const a of alarms) if (!seenBefore(a)) notify(a);
  }

  function announce(text) {
    const region = $("announcer");
    if (!region) return;
    pub.announced += 1;
    pub.announcement = text;
    // The same words twice in a row are not read again unless the region changes in between.
    if (region.textContent === text) {
      region.textContent = "";
      setTimeout(() => { region.textContent = text; }, 100);
    } else {
      region.textContent = text;
    }
  }

  // Only while the tab is hidden (the nurse is in another program or tab): one notification per new alarm,
  // closed when the alarm is taken or the nurse looks at the console; a click brings the console forward.
  function notify(a) {
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    if (document.visibilityState !== "hidden" || notified.has(a.id)) return;
    try {
      const n = new Notification(T("New alarm"), {
        body: `${T(a.detail)} — ${a.client.name}`, tag: `carealarm-alert-${a.id}`, requireInteraction: true,
      });
      n.onclick = () => { window.focus(); n.close(); };
      notified.set(a.id, n);
      pub.notifications += 1;
    } catch (_) { /* a browser that only notifies from a service worker: the sound and the title remain */ }
  }

  async function askNotifications() {
    if (!("Notification" in window)) return;
    try { await Notification.requestPermission(); } catch (_) { /* refused */ }
    showState();
  }

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState !== "visible") return;
    for (const n of notified.values()) n.close();
  });

  // -- the header controls -----------------------------------------------------------------------------

  function showState() {
    pub.audible = Boolean(audio && audio.state === "running");
    const console_ = $("console");
    const signedIn = Boolean(console_ && !console_.hidden);
    if ($("sound-off")) $("sound-off").hidden = pub.audible || !signedIn;
    const controls = $("attention");
    if (!controls) return;
    controls.hidden = !signedIn;
    $("sound-mute").setAttribute("aria-pressed", String(pub.muted));
    $("sound-volume").value = String(pub.volume);
    const alarmOpen = open.some((a) => a.priority === 1);
    const mark = $("sound-muted");
    mark.hidden = !pub.muted;
    mark.classList.toggle("alarm-open", pub.muted && alarmOpen);
    mark.textContent = T(alarmOpen ? "Muted — alarm waiting" : "Muted");
    const ask = $("notify-on");
    const permission = "Notification" in window ? Notification.permission : "unsupported";
    ask.hidden = permission === "unsupported";
    ask.disabled = permission !== "default";
    ask.textContent = T({ granted: "Desktop alerts on", denied: "Desktop alerts blocked" }[permission] || "Turn on desktop alerts");
  }

  function start() {
    unlock();
    showState();
  }

  function stop() {
    open = [];
    for (const n of notified.values()) n.close();
    notified.clear();
    showState();
  }

  function wire() {
    $("sound-mute").addEventListener("click", () => {
      pub.muted = !pub.muted;
      store("carealarm.muted", pub.muted);
      showState();
    });
    $("sound-volume").min = String(MIN_VOLUME);
    $("sound-volume").addEventListener("input", (ev) => {
      pub.volume = clampVolume(ev.target.value);
      store("carealarm.volume", pub.volume);
    });
    // Let go of the slider: hear the new level (not counted as an alarm).
    $("sound-volume").addEventListener("change", () => play("alarm", "preview"));
    $("notify-on").addEventListener("click", askNotifications);
    showState();
  }

  for (const type of ["click", "keydown"]) {
    document.addEventListener(type, () => { if (!audio || audio.state !== "running") unlock(); }, true);
  }
  if (window.carealarmI18n) window.carealarmI18n.onChange(showState);
  setInterval(remind, 250);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", wire);
  else wire();
})();
