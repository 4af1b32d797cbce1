// flipdns watch page. Read-only: it polls the admin protocol's own replies (the JSON that
// `flipdns ctl --json` prints) every two seconds while the page is visible, and draws them.
// No library, no network beyond this server: the charts are a few hundred points of SVG.
"use strict";

const POLL_MS = 2000;
const CLASSES = ["straggler", "overdue", "draining", "silent", "converged"];
// Each class has a dash pattern as well as a color, so the lines differ without color.
const DASHES = { straggler: "", overdue: "7 3", draining: "2 3", silent: "9 3 2 3", converged: "1 3" };
const PAD = { left: 46, right: 18, top: 26, bottom: 26 };

let selected = null;
let timer = null;

// ---------- small helpers ----------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, String(value));
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

const pad2 = (n) => String(n).padStart(2, "0");
function clock(ms) {
  const d = new Date(ms);
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}
function span(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}
const colorTag = (color) => el("span", { class: `color ${color}` }, color);

// On the HTTPS API's listener the data needs a token with the `read` scope: asked for once,
// kept in this tab's session storage (gone when the tab closes), sent as a bearer token.
const TOKEN_KEY = "flipdns-token";
class NeedsToken extends Error {}

async function getJSON(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const response = await fetch(path, { cache: "no-store", headers });
  if (response.status === 401) throw new NeedsToken(token ? "the token was refused" : "a token is needed");
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function askToken(why) {
  const form = document.getElementById("token-form");
  form.hidden = false;
  document.getElementById("token-why").textContent = why;
  document.getElementById("token").focus();
}

// ---------- the overview ----------

function next(service, now) {
  const phase = service.phase;
  if (phase.name === "preparing" && phase.drained_at_ms) {
    const to = phase.target ? ` to ${phase.target}` : "";
    return `flip${to} in ${span(phase.drained_at_ms - now)} (drained at ${clock(phase.drained_at_ms)})`;
  }
  if (phase.name === "settling" && phase.settle_until_ms) {
    return `normal TTL in ${span(phase.settle_until_ms - now)} (${clock(phase.settle_until_ms)})`;
  }
  return "\u2014";
}

function health(service) {
  if (!service.health || service.health.length === 0) return el("span", { class: "muted" }, "not checked");
  return el("div", {}, service.health.map((h) => {
    const sick = h.addresses.filter((a) => !a.healthy);
    const cls = sick.length === 0 ? "ok" : h.healthy === 0 ? "bad" : "warn";
    return el("div", {},
      colorTag(h.color), " ",
      el("span", { class: cls }, `${h.healthy}/${h.total} healthy`),
      sick.length ? el("span", { class: "addr" }, ` down: ${sick.map((a) => a.address).join(" ")}`) : null);
  }));
}

function resolvers(counts) {
  if (!counts) return el("span", { class: "muted" }, "ledger off");
  const parts = CLASSES.filter((c) => counts[c] > 0 && c !== "converged").map((c) => `${counts[c]} ${c}`);
  const text = parts.length ? parts.join(", ") : "none holding the old color";
  const cls = counts.straggler > 0 ? "bad" : counts.overdue > 0 ? "warn" : "";
  return el("span", { class: cls }, text, el("span", { class: "muted" }, ` (${counts.converged} converged)`));
}

function renderServices(status, now) {
  const body = document.querySelector("#services tbody");
  body.replaceChildren(...status.services.map((s) => {
    const phase = s.phase.target ? `${s.phase.name} \u2192 ${s.phase.target}` : s.phase.name;
    const approval = s.awaiting
      ? el("span", { class: "warn" }, `${s.awaiting.action}, asked by ${s.awaiting.by}; expires in ${span(s.awaiting.expires_ms - now)}`)
      : "\u2014";
    return el("tr", { "data-service": s.name, "data-live": s.live, "data-phase": s.phase.name, class: s.name === selected ? "selected" : null },
      el("th", { scope: "row" }, el("a", { href: `#service=${encodeURIComponent(s.name)}` }, s.name)),
      el("td", { "data-label": "Live" }, colorTag(s.live)),
      el("td", { "data-label": "Phase" }, phase),
      el("td", { "data-label": "Next" }, next(s, now)),
      el("td", { "data-label": "TTL" }, `${s.ttl} s`, el("span", { class: "muted" }, ` (normal ${s.normal_ttl})`)),
      el("td", { "data-label": "Health" }, health(s)),
      el("td", { "data-label": "Approval" }, approval),
      el("td", { "data-label": "Resolvers" }, resolvers(s.resolvers)));
  }));
}

function renderFleet(status, streams, now) {
  const body = document.querySelector("#fleet tbody");
  const rows = [];
  for (const secondary of status.secondaries || []) {
    const stream = streams.find((s) => s.name === secondary.name);
    for (const zone of secondary.zones) {
      const lag = !zone.reachable
        ? el("span", { class: "bad" }, `unreachable since ${clock(zone.unreachable_since_ms)}`)
        : zone.lag === undefined ? el("span", { class: "muted" }, "unknown")
        : zone.lag === 0 ? el("span", { class: "ok" }, "current")
        : el("span", { class: "warn" }, `${zone.lag} behind${zone.behind_since_ms ? ` for ${span(now - zone.behind_since_ms)}` : ""}`);
      const notify = zone.notify
        ? `${zone.notify.serial} ${zone.notify.acked ? "acknowledged" : `not acknowledged (${zone.notify.tries} tries)`}, ${span(now - zone.notify.at_ms)} ago`
        : "\u2014";
      const transfer = zone.transferred
        ? `${zone.transferred.kind} of ${zone.transferred.serial}, ${span(now - zone.transferred.at_ms)} ago`
        : "\u2014";
      const dnstap = stream === undefined ? el("span", { class: "muted" }, "not streaming")
        : stream.streaming ? el("span", { class: "ok" }, "in") : el("span", { class: "warn" }, "gap");
      rows.push(el("tr", { "data-secondary": secondary.name, "data-serial": zone.serves ?? "" },
        el("th", { scope: "row" }, secondary.name, el("div", { class: "addr muted" }, secondary.address)),
        el("td", { "data-label": "Zone" }, zone.origin),
        el("td", { "data-label": "Serves" }, zone.serves ?? "\u2014", el("span", { class: "muted" }, ` (ours ${zone.serial})`)),
        el("td", { "data-label": "Lag" }, lag),
        el("td", { "data-label": "Last NOTIFY" }, notify),
        el("td", { "data-label": "Last transfer" }, transfer),
        el("td", { "data-label": "dnstap" }, dnstap)));
    }
  }
  body.replaceChildren(...rows);
  document.getElementById("fleet-empty").hidden = rows.length > 0;
}

// ---------- charts ----------

/// Round tick values from 0 to at least `max`: 1, 2 or 5 times a power of ten apart.
function niceTicks(max) {
  const target = Math.max(1, max);
  const raw = target / 4;
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
  const whole = Math.max(1, Math.round(step));
  const ticks = [];
  for (let v = 0; v < target + whole; v += whole) {
    ticks.push(v);
    if (v >= target) break;
  }
  return ticks;
}

/// A time chart: `series` of [t, v] points (a step line when `step`), vertical `marks`.
function chart(container, { series, marks = [], tMin, tMax, yMax, yLabel, label, bars = false }) {
  // Drawn at the container's own width, so text stays the same size on a phone.
  const W = Math.max(320, Math.min(1100, container.clientWidth || 720));
  const H = Math.round(Math.max(190, Math.min(260, W * 0.32)));
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label });
  root.append(svg("title", {}, label));
  const x = (t) => PAD.left + ((t - tMin) / Math.max(1, tMax - tMin)) * (W - PAD.left - PAD.right);
  const ticks = niceTicks(yMax);
  const top = ticks[ticks.length - 1];
  const y = (v) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);
  // Axes, grid, ticks.
  root.append(svg("line", { class: "axis", x1: PAD.left, x2: W - PAD.right, y1: y(0), y2: y(0) }));
  for (const v of ticks) {
    root.append(svg("line", { class: "grid", x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }));
    root.append(svg("text", { x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end" }, v));
  }
  for (let i = 0; i <= 4; i++) {
    const t = tMin + ((tMax - tMin) * i) / 4;
    const anchor = i === 0 ? "start" : i === 4 ? "end" : "middle";
    root.append(svg("text", { x: x(t), y: H - 8, "text-anchor": anchor }, clock(t)));
  }
  root.append(svg("text", { x: 4, y: 14 }, yLabel));
  // Marks, each label on the first of five rows where it overlaps no other label.
  const rows = [-Infinity, -Infinity, -Infinity, -Infinity, -Infinity];
  for (const s of series) {
    if (s.points.length === 0) continue;
    if (bars) {
      // Each bar spans its interval: from the point before to its own.
      for (const [t, v, from] of s.points) {
        const left = x(from) + 0.5;
        const width = Math.max(1, x(t) - left - 0.5);
        root.append(svg("rect", { class: s.cls, x: left, y: y(v), width, height: Math.max(0, y(0) - y(v)) }));
      }
      root.lastChild.setAttribute("data-points", s.points.length);
      continue;
    }
    let d = "";
    s.points.forEach(([t, v], i) => {
      if (i === 0) d += `M${x(t).toFixed(1)},${y(v).toFixed(1)}`;
      else if (s.step) d += `H${x(t).toFixed(1)}V${y(v).toFixed(1)}`;
      else d += `L${x(t).toFixed(1)},${y(v).toFixed(1)}`;
    });
    const path = svg("path", { class: `series ${s.cls}`, d, "data-series": s.name, "data-points": s.points.length });
    if (s.dash) path.setAttribute("stroke-dasharray", s.dash);
    path.append(svg("title", {}, s.name));
    root.append(path);
  }
  // Marks over the series, so their labels stay readable; marks a few pixels apart (a
  // flip and the fleet serving it) share one line and label.
  const grouped = [];
  for (const m of marks.filter((m) => m.t >= tMin && m.t <= tMax).sort((a, b) => a.t - b.t)) {
    const last = grouped[grouped.length - 1];
    if (last && x(m.t) - x(last.t) < 8) {
      if (!last.label.split(" \u00b7 ").includes(m.label)) last.label += ` \u00b7 ${m.label}`;
      last.future = last.future || m.future;
    } else {
      grouped.push({ ...m });
    }
  }
  grouped.forEach((m) => {
    const at = x(m.t);
    root.append(svg("line", { class: `mark${m.future ? " future" : ""}`, x1: at, x2: at, y1: PAD.top - 4, y2: y(0) }));
    // Right of its line if it fits, else left of it; where neither side has room (a phone),
    // cut on the roomier side, the whole label kept as its tooltip and in the events list.
    const wide = (text) => text.length * 6.2 + 6;
    const room = { right: W - PAD.right - at - 3, left: at - 3 - PAD.left };
    let text = m.label;
    const end = wide(text) > room.right && (wide(text) <= room.left || room.left > room.right);
    const space = end ? room.left : room.right;
    if (wide(text) > space) text = `${text.slice(0, Math.max(1, Math.floor((space - 6) / 6.2) - 1))}\u2026`;
    const width = wide(text);
    const left = end ? at - 3 - width : at + 3;
    let row = rows.findIndex((right) => right < left);
    if (row < 0) row = rows.indexOf(Math.min(...rows));
    rows[row] = left + width;
    const label = svg("text", { class: "mark-label", x: end ? at - 3 : at + 3, y: PAD.top + 8 + row * 12, "text-anchor": end ? "end" : "start" }, text);
    if (text !== m.label) label.append(svg("title", {}, m.label));
    root.append(label);
  });
  container.replaceChildren(root);
  if (series.length > 1) {
    container.append(el("ul", { class: "legend" }, series.map((s) => {
      const key = svg("svg", { width: 26, height: 8, "aria-hidden": "true" });
      const line = svg("line", { class: `series ${s.cls}`, x1: 0, x2: 26, y1: 4, y2: 4 });
      if (s.dash) line.setAttribute("stroke-dasharray", s.dash);
      key.append(line);
      return el("li", {}, key, s.name);
    })));
  }
}

/// The cutover events in the trail, as marks: what happened, in a word or two.
function eventLabel(e) {
  const cmd = e.request && e.request.cmd;
  if (e.event === "asked") {
    if (!e.ok) return `${cmd} refused`;
    if (cmd === "rollback") return "rollback";
    if (cmd === "approve") return "approved";
    if (e.outcome === "awaiting_approval") return "awaits approval";
    if (e.outcome === "scheduled") return "prepare + flip scheduled";
    if (e.outcome === "prepared") return "prepare";
    if (e.outcome === "flipped") return "flip";
    if (e.outcome === "cancelled") return "cancel";
    if (cmd === "set_addresses") return "addresses set";
    return null;
  }
  return { flipped: "flip", refused: "refused", settled: "settle end", fleet: "fleet serves it",
    drain_moved: "drain moved", expired: "approval expired" }[e.event] || null;
}

function renderTtl(service, events, now, secondaries) {
  // The API's reads and refusals (they carry a source address) are no cutover events.
  const cutover = events.filter((e) => e.event !== "read" && !(e.event === "refused" && e.source))
    .filter((e) => eventLabel(e) !== null);
  const recent = cutover.slice(-20);
  const future = [];
  if (service.phase.drained_at_ms && service.phase.name === "preparing") future.push({ t: service.phase.drained_at_ms, label: "drained at", future: true });
  if (service.phase.settle_until_ms) future.push({ t: service.phase.settle_until_ms, label: "settle ends", future: true });
  const end = Math.max(now, ...future.map((m) => m.t));
  // From a little before the latest events (at most six hours back) to the next deadline.
  const first = recent.length ? recent[0].at_ms : now - 600_000;
  const tMin = Math.max(first - Math.max(15_000, (end - first) * 0.15), now - 6 * 3600_000);
  const tMax = end + Math.max(5_000, (end - tMin) * 0.03);
  // The TTL as a step function: short from a prepare or flip to the settle's end (or a
  // cancel), normal otherwise; the right end is what the server hands out now.
  const short = (e) => e.ok && ((e.event === "asked" && ["prepared", "scheduled", "flipped"].includes(e.outcome)) || e.event === "flipped");
  const normal = (e) => e.event === "settled" || (e.event === "asked" && e.ok && e.outcome === "cancelled");
  let level = service.normal_ttl;
  const points = [[tMin, level]];
  for (const e of cutover) {
    if (e.at_ms < tMin) {
      if (short(e)) level = service.cutover_ttl;
      if (normal(e)) level = service.normal_ttl;
      points[0][1] = level;
      continue;
    }
    const to = short(e) ? service.cutover_ttl : normal(e) ? service.normal_ttl : level;
    if (to !== level) { points.push([e.at_ms, to]); level = to; }
  }
  points.push([now, service.ttl]);
  // When each secondary took the zone's latest change (its last transfer).
  const served = (secondaries || []).flatMap((s) => s.zones
    .filter((z) => z.transferred && z.origin === service.zone)
    .map((z) => ({ t: z.transferred.at_ms, label: `${s.name} serves ${z.transferred.serial}` })));
  const marks = recent.filter((e) => e.at_ms >= tMin).map((e) => ({ t: e.at_ms, label: eventLabel(e) }))
    .concat(served, future);
  chart(document.getElementById("ttl-chart"), {
    series: [{ name: "TTL (s)", cls: "ttl", points, step: true }],
    marks, tMin, tMax, yMax: service.normal_ttl, yLabel: "TTL, seconds",
    label: `The TTL ${service.name} handed out over time: ${service.ttl} s now, normal ${service.normal_ttl} s, cutover ${service.cutover_ttl} s`,
  });
}

function renderDecay(report, now) {
  const decay = document.getElementById("decay-chart");
  const old = document.getElementById("old-chart");
  if (!report || !report.flip || report.timeline.length === 0) {
    const text = report ? "No flip yet: nothing has decayed." : "The straggler ledger is off.";
    decay.replaceChildren(el("p", { class: "empty" }, text));
    old.replaceChildren();
    return;
  }
  const points = report.timeline;
  const tMin = report.flip.at_ms - 5_000;
  const tMax = Math.max(now, points[points.length - 1].at_ms) + 5_000;
  const marks = [{ t: report.flip.at_ms, label: `flip ${report.flip.from} \u2192 ${report.flip.to}` }];
  if (report.drained_at_ms) marks.push({ t: report.drained_at_ms, label: "old color drained (TTL caches)", future: report.drained_at_ms > now });
  if (report.last_straggler_converged_ms) marks.push({ t: report.last_straggler_converged_ms, label: "last straggler converged" });
  const series = CLASSES.map((c) => ({ name: c, cls: `s-${c}`, dash: DASHES[c], points: points.map((p) => [p.at_ms, p.counts[c]]) }));
  const yMax = Math.max(1, ...points.flatMap((p) => CLASSES.map((c) => p.counts[c])));
  chart(decay, {
    series, marks, tMin, tMax, yMax, yLabel: "resolvers",
    label: `Resolvers by class since the flip of ${report.service} to ${report.flip.to}: ${CLASSES.map((c) => `${report.counts[c]} ${c}`).join(", ")}`,
  });
  // Answers with the old color per second, between timeline points.
  const rates = [];
  for (let i = 1; i < points.length; i++) {
    const seconds = (points[i].at_ms - points[i - 1].at_ms) / 1000;
    const answers = (points[i].old_color_answers || 0) - (points[i - 1].old_color_answers || 0);
    if (seconds > 0) rates.push([points[i].at_ms, Math.max(0, answers / seconds), points[i - 1].at_ms]);
  }
  chart(old, {
    series: [{ name: "old-color answers per second", cls: "old", points: rates }],
    marks, tMin, tMax, yMax: Math.max(1, ...rates.map((r) => r[1])), yLabel: `${report.flip.from} answers/s`, bars: true,
    label: `Answers that still carried ${report.flip.from}, per second, since the flip`,
  });
}

/// How late a resolver kept the old color: past the flip (or its old answer's expiry), or,
/// for one that asked for the old color's name, past every reason to.
function late(r) {
  const ms = (r.record && r.record.late_by_ms) || (r.straggler && r.straggler.late_ms) || 0;
  return ms > 0 ? span(ms) : "\u2014";
}

function renderStragglers(report, now) {
  const body = document.querySelector("#stragglers tbody");
  const rows = (report ? report.resolvers : [])
    .filter((r) => r.class === "straggler" || r.class === "overdue")
    .slice(0, 10)
    .map((r) => el("tr", { "data-class": r.class },
      el("td", { class: "addr", "data-label": "Resolver" }, r.resolver, r.subnet ? ` (${r.subnet})` : ""),
      el("td", { class: r.class === "straggler" ? "bad" : "warn", "data-label": "Class" }, r.class),
      el("td", { "data-label": "Color held" }, colorTag(r.color)),
      el("td", { "data-label": "Late by" }, late(r)),
      el("td", { "data-label": "Rhythm" }, r.interval_ms ? `every ${span(r.interval_ms)}${r.clamps ? " (clamps TTLs)" : ""}` : "\u2014"),
      el("td", { "data-label": "Via" }, (r.via || []).join(", ") || "\u2014")));
  body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 6, class: "muted" }, "No stragglers."))]));
}

function renderEvents(events) {
  const list = document.getElementById("events");
  const shown = events.filter((e) => e.event !== "read").slice(-30).reverse();
  list.replaceChildren(...shown.map((e) => {
    // A request says who asked it; a later event of a change, whose change it was.
    const what = e.request ? `${e.principal} asked ${e.request.cmd}` : eventLabel(e) || e.event;
    const whose = e.request ? "" : ` (a change by ${e.principal})`;
    return el("li", { class: e.ok ? "" : "warn" }, el("time", { datetime: new Date(e.at_ms).toISOString() }, clock(e.at_ms)),
      ` ${what}: ${e.outcome}${whose}`);
  }));
}

function renderDetail(service, report, events, now, secondaries) {
  const section = document.getElementById("detail");
  if (!service) { section.hidden = true; return; }
  section.hidden = false;
  document.getElementById("detail-title").textContent = service.fqdn;
  const last = service.flipped_at_ms ? `, last flip ${clock(service.flipped_at_ms)} (${span(now - service.flipped_at_ms)} ago)` : "";
  document.getElementById("detail-summary").replaceChildren(colorTag(service.live), ` live, ${service.phase.name}, TTL ${service.ttl} s, ${service.flips} flips${last}`);
  renderTtl(service, events, now, secondaries);
  renderDecay(report, now);
  renderStragglers(report, now);
  renderEvents(events);
}

// ---------- the loop ----------

async function refresh() {
  const updated = document.getElementById("updated");
  try {
    const { status } = await getJSON("/v1/services");
    const now = Date.now();
    renderServices(status, now);
    let report = null, events = [], streams = [];
    const service = selected && status.services.find((s) => s.name === selected);
    const first = service || status.services[0];
    if (first) {
      const name = encodeURIComponent(first.name);
      const reply = await getJSON(`/v1/services/${name}/stragglers?all=true&limit=50`).catch(() => null);
      report = reply && reply.stragglers;
      streams = report ? report.streams : [];
    }
    renderFleet(status, streams, now);
    if (service) {
      events = (await getJSON(`/v1/history?service=${encodeURIComponent(service.name)}&limit=200`)).history;
    }
    renderDetail(service, service ? report : null, events, now, status.secondaries);
    updated.textContent = `updated ${clock(now)}`;
    document.body.setAttribute("data-ready", "true");
  } catch (error) {
    if (error instanceof NeedsToken) {
      updated.textContent = `${error.message}`;
      askToken(`${error.message}: an API token with the read scope`);
      throw error; // no polling until a token is given
    }
    updated.textContent = `cannot reach the server (${error.message}); trying again`;
  }
}

function schedule() {
  clearTimeout(timer);
  if (document.hidden) return; // nobody looks: no requests
  refresh().then(() => { timer = setTimeout(schedule, POLL_MS); }, () => {});
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = document.getElementById("token").value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  document.getElementById("token").value = "";
  document.getElementById("token-form").hidden = true;
  schedule();
});

function route() {
  const match = location.hash.match(/^#service=(.+)$/);
  selected = match ? decodeURIComponent(match[1]) : null;
  schedule();
  if (selected) document.getElementById("detail-title").focus();
}

window.addEventListener("hashchange", route);
document.addEventListener("visibilitychange", schedule);
route();
