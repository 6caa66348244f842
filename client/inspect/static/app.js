// The keyhole inspector's page: a live list of the client's exchanges from
// api/events, details from api/requests/http/{id}, replay, curl and HAR.
// Plain DOM: every captured value is set as text, never parsed as HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  // el builds an element: attributes (class, text, on* handlers) and
  // children.
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const kid of kids) if (kid !== null && kid !== undefined) e.append(kid);
    return e;
  }

  const SECRET = new Set(["authorization", "cookie", "set-cookie", "proxy-authorization"]);
  const MASK = "••••••••";
  const MAX_ROWS = 2000;

  const state = {
    entries: new Map(), // id -> summary
    rows: new Map(), // id -> <tr>
    first: 0,
    selected: null, // id shown in the detail
    detail: null, // its record
    focusId: null, // the row that holds the tab stop
    editing: false,
  };

  // ---- formatting ----

  function fmtDuration(ns) {
    const ms = ns / 1e6;
    if (ms < 1) return ms.toFixed(2) + " ms";
    if (ms < 1000) return Math.round(ms) + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(2) + " s";
    return Math.floor(ms / 60000) + " min " + Math.round((ms % 60000) / 1000) + " s";
  }

  function fmtSize(n) {
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KiB";
    if (n < 1024 * 1024 * 1024) return (n / 1024 / 1024).toFixed(1) + " MiB";
    return (n / 1024 / 1024 / 1024).toFixed(2) + " GiB";
  }

  function fmtClock(iso) {
    const d = new Date(iso);
    return d.toTimeString().slice(0, 8);
  }

  const pathOf = (uri) => uri.split("?")[0];
  const statusClass = (code) => (code ? "s" + Math.floor(code / 100) : "pending");
  const isSSE = (e) => (e.content_type || "").toLowerCase().startsWith("text/event-stream");

  function toast(msg) {
    const t = $("toast");
    t.textContent = msg;
    t.classList.add("show");
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => t.classList.remove("show"), 2600);
  }

  async function api(url, opts) {
    const resp = await fetch(url, Object.assign({ credentials: "same-origin" }, opts));
    if (!resp.ok) {
      let msg = resp.status + " " + resp.statusText;
      try {
        msg = (await resp.json()).msg || msg;
      } catch (_) {
        // not JSON: keep the status
      }
      throw new Error(msg);
    }
    return resp;
  }
  const apiJSON = async (url, opts) => (await api(url, opts)).json();

  function b64bytes(s) {
    const bin = atob(s || "");
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ");

  // ---- status panel ----

  function applyStatus(s) {
    if (!s) return;
    state.first = s.first;
    for (const [id, e] of state.entries) if (e.n < s.first) state.entries.delete(id);
    const url = $("st-url");
    if (s.public_url) {
      url.textContent = s.public_url;
      if (/^https?:\/\//.test(s.public_url)) url.href = s.public_url;
    } else {
      url.textContent = "not registered yet";
      url.removeAttribute("href");
    }
    const st = $("st-state");
    st.textContent = s.state;
    st.className = "value state " + s.state;
    st.title = s.last_error || "";
    $("st-reconnects").textContent = s.reconnects;
    const h = s.metrics.http;
    $("st-rate").textContent = h.rate1.toFixed(2);
    $("st-latency").textContent = h.count ? [h.p50, h.p90, h.p99].map(fmtDuration).join(" · ") : "–";
    const c = s.capture;
    $("st-capture").textContent = c.on ? c.exchanges + " · " + fmtSize(c.used) + " of " + fmtSize(c.budget) : "capture off";
  }

  // ---- the live list ----

  function readFilters() {
    const status = $("f-status");
    const m = statusMatcher(status.value);
    status.setAttribute("aria-invalid", m === false ? "true" : "false");
    const dur = parseFloat($("f-duration").value);
    return {
      path: $("f-path").value.trim().toLowerCase(),
      method: $("f-method").value,
      status: m || null,
      header: $("f-header").value.trim().toLowerCase(),
      minNs: isFinite(dur) && dur > 0 ? dur * 1e6 : 0,
    };
  }

  // statusMatcher turns "2xx, 404, >=500, 300-399" into a test, null for
  // an empty filter, false for one it cannot read.
  function statusMatcher(text) {
    const parts = text.split(",").map((s) => s.trim()).filter(Boolean);
    if (!parts.length) return null;
    const tests = [];
    for (const p of parts) {
      let m;
      if ((m = /^([1-5])xx$/i.exec(p))) {
        const c = +m[1];
        tests.push((s) => Math.floor(s / 100) === c);
      } else if ((m = /^(\d{3})\s*-\s*(\d{3})$/.exec(p))) {
        const lo = +m[1], hi = +m[2];
        tests.push((s) => s >= lo && s <= hi);
      } else if ((m = /^(>=|<=|>|<|=|!=)?\s*(\d{3})$/.exec(p))) {
        const n = +m[2];
        const op = m[1] || "=";
        tests.push({ ">=": (s) => s >= n, "<=": (s) => s <= n, ">": (s) => s > n, "<": (s) => s < n, "=": (s) => s === n, "!=": (s) => s !== n }[op]);
      } else {
        return false;
      }
    }
    return (s) => tests.some((t) => t(s));
  }

  function headerMatches(blob, f) {
    const lines = blob.toLowerCase().split("\n");
    const i = f.indexOf(":");
    if (i < 0) return lines.some((l) => l.includes(f));
    const name = f.slice(0, i).trim();
    const value = f.slice(i + 1).trim();
    return lines.some((l) => {
      const j = l.indexOf(":");
      return j >= 0 && l.slice(0, j).trim() === name && l.slice(j + 1).includes(value);
    });
  }

  function matches(e, f) {
    if (f.path && !pathOf(e.uri).toLowerCase().includes(f.path)) return false;
    if (f.method && e.method !== f.method) return false;
    if (f.status === false) return false;
    if (f.status && !f.status(e.status)) return false;
    if (f.header && !headerMatches(e.headers || "", f.header)) return false;
    if (f.minNs && e.duration < f.minNs) return false;
    return true;
  }

  let renderTimer = null;
  function scheduleRender() {
    if (renderTimer === null) renderTimer = setTimeout(() => { renderTimer = null; renderList(); }, 30);
  }

  function makeRow(id) {
    const cell = (cls) => el("td", { class: cls });
    const tr = el("tr", { tabindex: "-1", "data-id": id },
      cell("c-time"), cell("c-method"), cell("c-path"), cell("c-status"), cell("c-dur"), cell("c-size"));
    tr.addEventListener("click", () => { setFocusRow(id, false); openDetail(id); });
    tr.addEventListener("focus", () => { state.focusId = id; });
    return tr;
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function fillRow(tr, e) {
    const [time, method, path, status, dur, size] = tr.children;
    setText(time, fmtClock(e.start));
    setText(method, e.kind === "websocket" ? "WS" : e.method);
    method.className = "c-method method";
    const badges = [];
    if (e.kind === "websocket") badges.push("websocket");
    if (isSSE(e)) badges.push("events");
    if (e.replay_of) badges.push("replay");
    const key = badges.join(",") + "|" + e.uri;
    if (path.dataset.key !== key) {
      path.dataset.key = key;
      path.replaceChildren(...badges.map((b) => el("span", { class: "badge", text: b })), e.uri);
      path.title = e.uri;
    }
    let st = e.status ? String(e.status) : "…";
    let cls = statusClass(e.status);
    if (e.reset && e.done) { st = e.status ? e.status + " ✕" : "reset"; cls = "sreset"; }
    setText(status, st);
    status.className = "c-status " + cls;
    setText(dur, e.done ? fmtDuration(e.duration) : "…");
    setText(size, e.kind === "websocket" ? e.items + " msg" : fmtSize(e.size));
    tr.dataset.path = pathOf(e.uri);
    tr.dataset.status = e.status;
    tr.classList.toggle("selected", e.id === state.selected);
    tr.setAttribute("aria-selected", e.id === state.selected ? "true" : "false");
  }

  function renderList() {
    const f = readFilters();
    const list = [...state.entries.values()].filter((e) => matches(e, f)).sort((a, b) => b.n - a.n).slice(0, MAX_ROWS);
    const tbody = $("rows");
    list.forEach((e, i) => {
      let tr = state.rows.get(e.id);
      if (!tr) {
        tr = makeRow(e.id);
        state.rows.set(e.id, tr);
      }
      fillRow(tr, e);
      const at = tbody.children[i];
      if (at !== tr) tbody.insertBefore(tr, at || null);
    });
    while (tbody.children.length > list.length) tbody.lastElementChild.remove();
    for (const id of state.rows.keys()) if (!state.entries.has(id)) state.rows.delete(id);
    const empty = $("empty");
    empty.hidden = list.length > 0;
    empty.textContent = state.entries.size ? "No request matches the filters." : "No requests yet. Open the public URL and they show up here as they happen.";
    // One row holds the tab stop (a roving tabindex): Tab reaches the
    // list once, the arrows move within it.
    let stop = state.focusId && state.rows.get(state.focusId);
    if (!stop || !stop.isConnected) stop = tbody.firstElementChild;
    for (const tr of tbody.children) tr.tabIndex = tr === stop ? 0 : -1;
  }

  function setFocusRow(id, focus) {
    state.focusId = id;
    const tr = state.rows.get(id);
    if (!tr) return;
    for (const r of $("rows").children) r.tabIndex = r === tr ? 0 : -1;
    if (focus) tr.focus();
  }

  $("rows").addEventListener("keydown", (ev) => {
    const tr = ev.target.closest("tr");
    if (!tr) return;
    let next = null;
    switch (ev.key) {
      case "ArrowDown": next = tr.nextElementSibling; break;
      case "ArrowUp": next = tr.previousElementSibling; break;
      case "Home": next = tr.parentElement.firstElementChild; break;
      case "End": next = tr.parentElement.lastElementChild; break;
      case "Enter":
      case " ":
        ev.preventDefault();
        openDetail(tr.dataset.id);
        return;
      default:
        return;
    }
    ev.preventDefault();
    if (next) setFocusRow(next.dataset.id, true);
  });

  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && !$("detail").hidden && !document.querySelector("dialog[open]")) {
      ev.preventDefault();
      closeDetail();
    } else if (ev.key === "/" && !/^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName)) {
      ev.preventDefault();
      $("f-path").focus();
    }
  });

  for (const id of ["f-path", "f-method", "f-status", "f-header", "f-duration"]) {
    $(id).addEventListener("input", scheduleRender);
  }
  $("filters").addEventListener("submit", (ev) => ev.preventDefault());
  $("clear").addEventListener("click", async () => {
    try {
      await api("api/requests/http", { method: "DELETE" });
      closeDetail();
      toast("Cleared");
    } catch (err) {
      toast("Clear failed: " + err.message);
    }
  });

  function connect() {
    const es = new EventSource("api/events");
    es.addEventListener("reset", (ev) => {
      const d = JSON.parse(ev.data);
      state.entries.clear();
      for (const r of d.requests) state.entries.set(r.id, r);
      applyStatus(d.status);
      scheduleRender();
    });
    es.addEventListener("update", (ev) => {
      const d = JSON.parse(ev.data);
      let mine = false;
      for (const r of d.requests) {
        const old = state.entries.get(r.id);
        state.entries.set(r.id, r);
        if (r.id === state.selected && (!old || old.done !== r.done || old.status !== r.status || old.items !== r.items)) mine = true;
      }
      applyStatus(d.status);
      scheduleRender();
      if (mine && !state.editing) refreshDetail();
    });
    es.addEventListener("error", () => {
      const st = $("st-state");
      st.textContent = "inspector unreachable";
      st.className = "value state stopped";
    });
  }

  // ---- the detail ----

  async function openDetail(id) {
    state.selected = id;
    state.editing = false;
    for (const tr of $("rows").children) {
      tr.classList.toggle("selected", tr.dataset.id === id);
      tr.setAttribute("aria-selected", tr.dataset.id === id ? "true" : "false");
    }
    $("main").classList.add("with-detail");
    const d = $("detail");
    d.hidden = false;
    $("d-content").replaceChildren(el("p", { class: "note", text: "Loading…" }));
    try {
      const rec = await apiJSON("api/requests/http/" + encodeURIComponent(id));
      if (state.selected !== id) return;
      state.detail = rec;
      renderDetail(rec);
    } catch (err) {
      $("d-content").replaceChildren(el("p", { class: "error", text: err.message }));
    }
    d.focus();
  }

  async function refreshDetail() {
    const id = state.selected;
    try {
      const rec = await apiJSON("api/requests/http/" + encodeURIComponent(id));
      if (state.selected !== id || state.editing) return;
      const scroll = $("detail").scrollTop;
      const replay = $("replay-area") && $("replay-area").firstChild ? $("replay-area") : null;
      state.detail = rec;
      renderDetail(rec, replay);
      $("detail").scrollTop = scroll;
    } catch (_) {
      // evicted meanwhile: keep what is shown
    }
  }

  function closeDetail() {
    const d = $("detail");
    if (d.hidden) return;
    d.hidden = true;
    $("main").classList.remove("with-detail");
    const id = state.selected;
    state.selected = null;
    state.detail = null;
    state.editing = false;
    for (const tr of $("rows").children) {
      tr.classList.remove("selected");
      tr.setAttribute("aria-selected", "false");
    }
    if (id && state.rows.get(id)) setFocusRow(id, true);
  }
  $("d-close").addEventListener("click", closeDetail);

  function kvTable(rows) {
    return el("table", { class: "kv" }, el("tbody", null, ...rows.map(([k, v]) => el("tr", null, el("td", { text: k }), el("td", null, v)))));
  }

  // headerRows lists headers sorted by name; secret values are masked
  // until clicked, and are not in the page until then.
  function headerRows(headers) {
    const rows = [];
    for (const name of Object.keys(headers || {}).sort()) {
      for (const value of headers[name]) {
        if (SECRET.has(name.toLowerCase())) {
          const b = el("button", { type: "button", class: "mask", "aria-label": "Reveal " + name, title: "Click to reveal", text: MASK });
          b.addEventListener("click", () => {
            const v = el("span", { class: "revealed", text: value });
            b.replaceWith(v);
          });
          rows.push([name, b]);
        } else {
          rows.push([name, el("span", { text: value })]);
        }
      }
    }
    return rows;
  }

  function section(title, ...kids) {
    return el("section", null, el("h3", { text: title }), ...kids);
  }

  function renderDetail(rec, keepReplay) {
    const k = rec.keyhole;
    $("d-title").textContent = (k.kind === "websocket" ? "WS" : rec.request.method) + " " + rec.request.uri;
    const canReplay = k.kind === "http";
    $("a-replay").disabled = !canReplay;
    $("a-edit").disabled = !canReplay;
    updateHARLink();

    const status = rec.response ? rec.response.status : k.error ? "no response" : k.done ? "no response" : "waiting for the local service…";
    const sum = [
      ["Status", el("span", { class: statusClass(rec.response && rec.response.status_code), text: status + (k.reset ? " (reset: the visitor saw an error or a cut-off response)" : "") })],
      ["Duration", el("span", { text: fmtDuration(rec.duration) + (k.done ? "" : " so far") })],
      ["Received", el("span", { text: new Date(k.timings.received).toLocaleString() })],
    ];
    if (k.timings.response) sum.push(["Response after", el("span", { text: fmtDuration(k.timings.wait) })]);
    if (k.timings.done && k.timings.response) sum.push(["Body took", el("span", { text: fmtDuration(k.timings.receive) })]);
    if (rec.remote_addr) sum.push(["Remote address", el("span", { text: rec.remote_addr })]);
    sum.push(["Request ID", el("span", { text: rec.id, title: "The same ID is logged as req= by the client and the proxy" })]);
    if (k.replay_of) {
      sum.push(["Replay of", el("a", { href: "#", text: k.replay_of, onclick: (ev) => { ev.preventDefault(); openDetail(k.replay_of); } })]);
    }
    const parts = [kvTable(sum)];
    if (k.error) parts.push(el("p", { class: "error", text: k.error }));

    const req = [el("h4", { text: "Headers" }), kvTable(headerRows(rec.request.headers))];
    const q = rec.request.uri.indexOf("?");
    if (q >= 0) {
      const rows = [];
      for (const [name, value] of new URLSearchParams(rec.request.uri.slice(q + 1))) rows.push([name, el("span", { text: value })]);
      req.push(el("h4", { text: "Query" }), kvTable(rows));
    }
    if (k.kind === "http") req.push(el("h4", { text: "Body" }), bodyBox(rec, "request"));
    parts.push(section("Request", ...req));

    if (rec.response) {
      const resp = [el("h4", { text: "Headers" }), kvTable(headerRows(rec.response.headers))];
      if (k.kind === "http") resp.push(el("h4", { text: "Body" }), bodyBox(rec, "response"));
      parts.push(section("Response", ...resp));
    }
    if (k.kind === "websocket") parts.push(section("Messages", wsTimeline(rec)));
    if (k.events && k.events.length || k.events_dropped) parts.push(section("Events", sseTimeline(rec)));
    const area = keepReplay || el("div", { id: "replay-area" });
    parts.push(area);
    $("d-content").replaceChildren(...parts);
  }

  function bodyBox(rec, part) {
    const k = rec.keyhole;
    const b = part === "request" ? k.request_body : k.response_body;
    const box = el("div", { class: "body-view", "data-part": part });
    const meta = [fmtSize(b.size)];
    if (b.content_type) meta.push(b.content_type);
    if (b.truncated) meta.push("kept: the first " + fmtSize(b.captured));
    box.append(el("p", { class: "note", text: meta.join(" · ") }));
    if (b.size === 0) {
      box.append(el("p", { class: "note", text: "No body." }));
      return box;
    }
    const slot = el("div", { class: "view" }, el("p", { class: "note", text: "Loading…" }));
    box.append(slot);
    const base = "api/requests/http/" + encodeURIComponent(rec.id) + "/" + part;
    apiJSON(base + "/view").then((v) => slot.replaceChildren(...viewNodes(v, base))).catch((err) => slot.replaceChildren(el("p", { class: "error", text: err.message })));
    box.append(el("p", { class: "note" }, el("a", { href: base + "/body?download=1", text: "Download the kept body" })));
    return box;
  }

  // markAt shows text with the character at line/column (counted in
  // characters from 1) marked.
  function markAt(text, line, column) {
    const lines = text.split("\n");
    let idx = 0;
    for (let i = 0; i < Math.min(line - 1, lines.length); i++) idx += lines[i].length + 1;
    idx += Array.from(lines[Math.min(line, lines.length) - 1] || "").slice(0, column - 1).join("").length;
    const pre = el("pre", { class: "body" });
    pre.append(text.slice(0, idx), el("mark", { class: "err", text: text.slice(idx, idx + 1) || " " }), text.slice(idx + 1));
    return pre;
  }

  function viewNodes(v, base) {
    const out = [];
    const label = v.kind.toUpperCase();
    switch (v.kind) {
      case "empty":
        out.push(el("p", { class: "note", text: "No body." }));
        break;
      case "json":
      case "xml":
        if (v.error) {
          out.push(el("p", { class: "error", text: "Invalid " + label + " at line " + v.error.line + ", column " + v.error.column + ": " + v.error.message }));
          if (v.partial) out.push(el("p", { class: "note", text: "The body is kept only in part, which may be why." }));
          out.push(markAt(v.text, v.error.line, v.error.column));
        } else {
          out.push(el("pre", { class: "body pretty", "data-kind": v.kind, text: v.text }));
        }
        break;
      case "form":
        out.push(kvTable(v.fields.map((f) => [f.name, el("span", { text: f.value })])));
        break;
      case "multipart":
        if (v.error) out.push(el("p", { class: "error", text: v.error.message }));
        out.push(kvTable((v.parts || []).map((p) => [
          p.name || "(unnamed)",
          el("span", { text: (p.filename ? "file " + p.filename + " · " : "") + (p.content_type ? p.content_type + " · " : "") + fmtSize(p.size) + (p.text !== undefined && !p.binary ? "\n" + p.text : "") }),
        ])));
        break;
      case "image":
        out.push(el("img", { class: "body", src: base + "/body", alt: "The body, an image (" + (v.content_type || "image") + ")" }));
        break;
      case "text":
        out.push(el("pre", { class: "body wrap", text: v.text }));
        break;
      default:
        out.push(el("pre", { class: "body hex", text: v.hex || "" }));
    }
    if (v.decoded) out.push(el("p", { class: "note", text: "Shown decoded from " + v.decoded + "." }));
    if (v.partial && !(v.error && (v.kind === "json" || v.kind === "xml"))) out.push(el("p", { class: "note", text: "Only part of the body is kept." }));
    if (v.note) out.push(el("p", { class: "note", text: v.note }));
    return out;
  }

  function offset(rec, iso) {
    return "+" + fmtDuration((Date.parse(iso) - Date.parse(rec.start)) * 1e6);
  }

  function wsTimeline(rec) {
    const k = rec.keyhole;
    const msgs = k.messages || [];
    if (!msgs.length) return el("p", { class: "note", text: "No messages yet." });
    const ul = el("ul", { class: "timeline" });
    for (const m of msgs) {
      let data = m.text !== undefined ? m.text : m.data ? hex(b64bytes(m.data)) : "";
      if (m.type === "close") data = (m.close_code || "") + (m.text ? " " + m.text : "");
      ul.append(el("li", null,
        el("span", { class: "t", text: offset(rec, m.time) }),
        el("span", { class: m.direction === "in" ? "dir-in" : "dir-out", text: m.direction === "in" ? "→ to service" : "← from service" }),
        el("span", { class: "size", text: m.type + " " + fmtSize(m.size) }),
        el("span", { class: "data", text: data + (m.truncated ? " …" : "") })));
    }
    const out = el("div", null, ul);
    if (k.messages_dropped) out.append(el("p", { class: "note", text: k.messages_dropped + " more messages not kept" }));
    return out;
  }

  function sseTimeline(rec) {
    const k = rec.keyhole;
    const ul = el("ul", { class: "timeline" });
    for (const e of k.events || []) {
      ul.append(el("li", null,
        el("span", { class: "t", text: offset(rec, e.time) }),
        el("span", { class: "dir-out", text: e.event || "message" }),
        el("span", { class: "size", text: e.id ? "id " + e.id : fmtSize(e.size) }),
        el("span", { class: "data", text: e.data + (e.truncated ? " …" : "") })));
    }
    const out = el("div", null, ul);
    if (k.events_dropped) out.append(el("p", { class: "note", text: k.events_dropped + " more events not kept" }));
    return out;
  }

  function updateHARLink() {
    const a = $("a-har");
    if (!state.selected) return;
    const secrets = $("a-har-secrets").checked;
    a.href = "api/requests/http/" + encodeURIComponent(state.selected) + "/har" + (secrets ? "" : "?mask=1");
    a.setAttribute("download", "keyhole-" + state.selected + ".har");
    $("har-all").href = "api/requests/har" + (secrets ? "" : "?mask=1");
  }
  $("a-har-secrets").addEventListener("change", updateHARLink);

  // ---- copy as curl ----

  $("a-curl").addEventListener("click", async () => {
    if (!state.selected) return;
    try {
      const text = await (await api("api/requests/http/" + encodeURIComponent(state.selected) + "/curl")).text();
      try {
        await navigator.clipboard.writeText(text);
        toast("Copied the curl command");
      } catch (_) {
        showText("Copy as curl", text);
      }
    } catch (err) {
      toast(err.message);
    }
  });

  function showText(title, text) {
    const ta = el("textarea", { readonly: true, "aria-label": title });
    ta.value = text;
    const close = el("button", { type: "button", text: "Close" });
    const dlg = el("dialog", { "aria-label": title }, el("h3", { text: title }), ta, el("p", null, close));
    close.addEventListener("click", () => dlg.close());
    dlg.addEventListener("close", () => dlg.remove());
    document.body.append(dlg);
    dlg.showModal();
    ta.select();
  }

  // ---- replay ----

  // requestBodyText is the kept request body as text, or null when it is
  // not text.
  function requestBodyText(rec) {
    const raw = b64bytes(rec.request.raw);
    let i = 0;
    for (; i + 3 < raw.length; i++) if (raw[i] === 13 && raw[i + 1] === 10 && raw[i + 2] === 13 && raw[i + 3] === 10) break;
    const body = raw.slice(i + 4);
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(body);
    } catch (_) {
      return null;
    }
  }

  async function replay(rec, edit) {
    const area = $("replay-area");
    area.replaceChildren(section("Replay", el("p", { class: "note", text: "Replaying to the local service…" })));
    try {
      const resp = await api("api/requests/http", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(edit ? { id: rec.id, edit } : { id: rec.id }),
      });
      const id = (resp.headers.get("Location") || "").split("/").pop();
      let neu = await apiJSON("api/requests/http/" + id);
      for (let i = 0; !neu.keyhole.done && i < 400; i++) {
        await new Promise((r) => setTimeout(r, 150));
        neu = await apiJSON("api/requests/http/" + id);
      }
      await showCompare(rec, neu);
    } catch (err) {
      area.replaceChildren(section("Replay", el("p", { class: "error", text: "Replay failed: " + err.message })));
    }
  }

  $("a-replay").addEventListener("click", () => { if (state.detail) { state.editing = false; replay(state.detail, null); } });

  $("a-edit").addEventListener("click", () => {
    const rec = state.detail;
    if (!rec) return;
    state.editing = true;
    const lines = [];
    for (const name of Object.keys(rec.request.headers).sort()) {
      for (const v of rec.request.headers[name]) lines.push(name + ": " + (SECRET.has(name.toLowerCase()) ? MASK : v));
    }
    const text = requestBodyText(rec);
    const method = el("input", { name: "method", "aria-label": "Method", value: rec.request.method });
    const uri = el("input", { name: "uri", "aria-label": "Path and query", value: rec.request.uri });
    const headers = el("textarea", { name: "headers", rows: Math.min(12, lines.length + 1), "aria-label": "Headers, one per line" });
    headers.value = lines.join("\n");
    const body = el("textarea", { name: "body", rows: 8, "aria-label": "Body" });
    body.value = text === null ? "" : text;
    if (text === null) {
      body.disabled = true;
      body.placeholder = "The body is not text: it is replayed as it was.";
    }
    const send = el("button", { type: "submit", class: "primary", text: "Send to the local service" });
    const cancel = el("button", { type: "button", text: "Cancel" });
    const form = el("form", { class: "edit", "aria-label": "Edit and replay" },
      el("div", { class: "row" }, method, uri),
      el("label", null, "Headers (" + MASK + " keeps the original value)", headers),
      el("label", null, "Body", body),
      el("div", { class: "buttons" }, send, cancel));
    cancel.addEventListener("click", () => { state.editing = false; $("replay-area").replaceChildren(); });
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const hs = {};
      const originals = {};
      for (const name of Object.keys(rec.request.headers)) originals[name.toLowerCase()] = rec.request.headers[name].slice();
      for (const line of headers.value.split("\n")) {
        const i = line.indexOf(":");
        if (i <= 0) continue;
        const name = line.slice(0, i).trim();
        let value = line.slice(i + 1).trim();
        if (value === MASK && originals[name.toLowerCase()]) value = originals[name.toLowerCase()].shift() || "";
        (hs[name] = hs[name] || []).push(value);
      }
      const edit = { method: method.value.trim(), uri: uri.value.trim(), headers: hs };
      if (text !== null) edit.body = body.value;
      state.editing = false;
      replay(rec, edit);
    });
    $("replay-area").replaceChildren(section("Edit and replay", form));
    method.focus();
  });

  async function responseText(rec) {
    if (!rec.response) return "(no response" + (rec.keyhole.error ? ": " + rec.keyhole.error : "") + ")";
    const lines = [rec.response.proto + " " + rec.response.status];
    for (const name of Object.keys(rec.response.headers).sort()) {
      for (const v of rec.response.headers[name]) lines.push(name + ": " + (SECRET.has(name.toLowerCase()) ? MASK : v));
    }
    lines.push("");
    if (rec.keyhole.response_body.size > 0) {
      const v = await apiJSON("api/requests/http/" + encodeURIComponent(rec.id) + "/response/view");
      switch (v.kind) {
        case "form": lines.push(...v.fields.map((f) => f.name + "=" + f.value)); break;
        case "multipart": lines.push(...(v.parts || []).map((p) => (p.name || "") + ": " + (p.text || fmtSize(p.size)))); break;
        case "image": lines.push("[image, " + fmtSize(v.size) + "]"); break;
        case "binary": lines.push(v.hex || ""); break;
        default: lines.push(v.text || "");
      }
    }
    return lines.join("\n");
  }

  // diffLines is a longest-common-subsequence line diff: a list of
  // {op: "same"|"del"|"add", text}.
  function diffLines(a, b) {
    const n = a.length, m = b.length;
    if (n * m > 4e6) {
      const out = [];
      for (let i = 0; i < Math.max(n, m); i++) {
        if (a[i] === b[i]) out.push({ op: "same", text: a[i] });
        else {
          if (i < n) out.push({ op: "del", text: a[i] });
          if (i < m) out.push({ op: "add", text: b[i] });
        }
      }
      return out;
    }
    const w = m + 1;
    const t = new Uint32Array((n + 1) * w);
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        t[i * w + j] = a[i] === b[j] ? t[(i + 1) * w + j + 1] + 1 : Math.max(t[(i + 1) * w + j], t[i * w + j + 1]);
      }
    }
    const out = [];
    let i = 0, j = 0;
    while (i < n && j < m) {
      if (a[i] === b[j]) { out.push({ op: "same", text: a[i] }); i++; j++; }
      else if (t[(i + 1) * w + j] >= t[i * w + j + 1]) out.push({ op: "del", text: a[i++] });
      else out.push({ op: "add", text: b[j++] });
    }
    while (i < n) out.push({ op: "del", text: a[i++] });
    while (j < m) out.push({ op: "add", text: b[j++] });
    return out;
  }

  async function showCompare(orig, neu) {
    const [a, b] = await Promise.all([responseText(orig), responseText(neu)]);
    const ops = diffLines(a.split("\n"), b.split("\n"));
    const left = el("pre", { class: "original", "aria-label": "Original response" });
    const right = el("pre", { class: "replayed", "aria-label": "Replayed response" });
    let changes = 0;
    for (const o of ops) {
      if (o.op !== "add") left.append(el("span", { class: "line" + (o.op === "del" ? " del" : ""), text: o.text + "\n" }));
      if (o.op !== "del") right.append(el("span", { class: "line" + (o.op === "add" ? " add" : ""), text: o.text + "\n" }));
      if (o.op !== "same") changes++;
    }
    const open = el("button", { type: "button", text: "Open the replay" });
    open.addEventListener("click", () => openDetail(neu.id));
    const title = "Replay: " + (neu.response ? neu.response.status : "no response") + " in " + fmtDuration(neu.duration);
    $("replay-area").replaceChildren(section(title,
      el("p", { class: "legend", text: changes ? changes + " lines differ: removed on the left, added on the right." : "The responses are the same." }),
      el("div", { class: "compare" },
        el("div", null, el("h4", { text: "Original" }), left),
        el("div", null, el("h4", { text: "Replay" }), right)),
      el("p", null, open)));
  }

  connect();
})();
