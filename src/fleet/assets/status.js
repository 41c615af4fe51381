// fleet status page: polls status.json (same directory) and redraws. No libraries, no
// inline code (the page's Content-Security-Policy forbids it), text only through textContent.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const CHART_W = 300, CHART_H = 64;
  const FIELDS = [  // [json field, column label, formatter]
    ["id", "worker", String], ["generation", "gen", String], ["state", "state", String],
    ["pid", "pid", String], ["port", "port", String], ["uptime", "uptime", duration],
    ["restarts", "restarts", String], ["connections", "conns", String], ["websockets", "ws", String],
    ["requests_per_second", "req/s", rate], ["cpu_percent", "CPU", percent], ["rss", "RSS", bytes],
  ];
  let failures = 0;
  let timer = null;
  let inFlight = false;
  let updates = 0;

  function $(id) { return document.getElementById(id); }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.floor(seconds);
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + (s % 60) + "s";
    return s + "s";
  }
  function bytes(value) {
    if (value === null || value === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (value >= 1024 && i < units.length - 1) { value /= 1024; i += 1; }
    return (i ? value.toFixed(value < 10 ? 1 : 0) : value) + " " + units[i];
  }
  function rate(value) { return value === null || value === undefined ? "–" : value.toFixed(value < 10 ? 1 : 0); }
  function percent(value) { return value === null || value === undefined ? "–" : value.toFixed(value < 10 ? 1 : 0) + "%"; }
  function show(value, format) { return value === null || value === undefined ? "–" : format(value); }
  function clock(unix) { return new Date(unix * 1000).toLocaleTimeString(); }

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function renderSummary(doc) {
    const workers = doc.workers.filter((w) => w.current);
    const ready = workers.filter((w) => w.state === "ready").length;
    const last = doc.history.requests_per_second[doc.history.requests_per_second.length - 1];
    const items = [
      ["workers ready", ready + " / " + doc.desired],
      ["generation", String(doc.generation)],
      ["up", duration(doc.now - doc.started_at)],
      ["requests/s", doc.proxy ? rate(last) : "no proxy"],
      ["master CPU", show(doc.master.cpu_percent, percent)],
      ["master RSS", bytes(doc.master.rss)],
      ["master pid", String(doc.master.pid)],
      ["version", doc.version],
    ];
    const list = $("summary");
    list.replaceChildren(...items.map(([label, value]) => {
      const item = el("div");
      item.append(el("dt", label), el("dd", value));
      return item;
    }));
  }

  function chart(figure, times, values, unit, now, interval) {
    let svg = figure.querySelector("svg");
    if (!svg) {
      svg = document.createElementNS(SVG, "svg");
      svg.setAttribute("viewBox", "0 0 " + CHART_W + " " + CHART_H);
      svg.setAttribute("preserveAspectRatio", "none");
      svg.setAttribute("role", "img");
      figure.append(svg);
    }
    const known = values.filter((v) => v !== null);
    const latest = known.length ? values[values.length - 1] : null;
    const format = unit === "bytes" ? bytes : unit === "%" ? percent : unit === "req/s" ? rate : String;
    figure.querySelector("figcaption b").textContent = latest === null ? "n/a" : format(latest);
    svg.setAttribute("aria-label", figure.querySelector("figcaption").textContent);
    const span = Math.max(60, times.length ? now - times[0] : 0, 10 * interval);
    const top = Math.max(unit === "bytes" ? 1024 * 1024 : 1, ...known) * 1.1;
    const x = (t) => (CHART_W * (1 - (now - t) / span)).toFixed(1);
    const y = (v) => (CHART_H - 1 - (CHART_H - 2) * v / top).toFixed(1);
    let line = "", area = "", open = false, first = null;
    for (let i = 0; i < times.length; i += 1) {
      if (values[i] === null) { open = false; continue; }
      const point = x(times[i]) + "," + y(values[i]);
      line += (open ? " L" : " M") + point;
      if (!open && first === null) first = x(times[i]);
      open = true;
    }
    if (first !== null && line) area = line + " L" + x(times[times.length - 1]) + "," + CHART_H + " L" + first + "," + CHART_H + " Z";
    const parts = [["area", area], ["line", line]];
    svg.replaceChildren();
    for (const [cls, d] of parts) {
      if (!d) continue;
      const path = document.createElementNS(SVG, "path");
      path.setAttribute("class", cls);
      path.setAttribute("d", d.trim());
      path.setAttribute("vector-effect", "non-scaling-stroke");
      svg.append(path);
    }
    figure.dataset.max = known.length ? String(Math.max(...known)) : "";
    figure.querySelector("small").textContent = known.length
      ? "max " + format(top / 1.1) + " · last " + duration(span) : "not measured (no proxy)";
  }

  function renderCharts(doc) {
    const history = doc.history;
    for (const figure of document.querySelectorAll(".chart")) {
      const series = figure.dataset.series;
      let values = history[series];
      if (series === "connections") {  // HTTP requests in flight plus open WebSockets
        values = values.map((v, i) => v === null ? null : v + (history.websockets[i] || 0));
      }
      chart(figure, history.time, values, figure.dataset.unit, doc.now, doc.interval);
    }
  }

  function renderWorkers(doc) {
    const body = $("workers").tBodies[0];
    const rows = doc.workers.map((worker) => {
      const row = el("tr");
      row.dataset.worker = worker.id;
      if (!worker.current) row.className = "old";
      for (const [field, label, format] of FIELDS) {
        const value = worker[field];
        let text = value === null || value === undefined ? "–" : format(value);
        if (field === "state" && worker.crash_looping) text += " (crash loop)";
        const cell = el("td", text);
        cell.dataset.label = label;
        cell.dataset.field = field;
        if (field === "state") cell.className = "state state-" + worker.state;
        row.append(cell);
      }
      return row;
    });
    body.replaceChildren(...rows);
  }

  function renderExits(doc) {
    const items = doc.exits.map((exit) => {
      const how = exit.signal ? "killed by " + exit.signal : "exit code " + exit.code;
      const lived = exit.lived === null ? "" : " after " + duration(exit.lived);
      const item = el("li", clock(exit.time) + " · " + exit.worker + " (pid " + (exit.pid === null ? "?" : exit.pid) +
                      ", port " + exit.port + ") " + how + lived);
      item.dataset.worker = exit.worker;
      return item;
    });
    $("exits").replaceChildren(...items);
    $("no-exits").hidden = items.length > 0;
  }

  function render(doc) {
    $("name").textContent = doc.name + " · " + doc.app;
    document.title = "fleet · " + doc.name;
    renderSummary(doc);
    renderCharts(doc);
    renderWorkers(doc);
    renderExits(doc);
    updates += 1;
    document.body.dataset.updates = String(updates);
    document.body.dataset.sampled = String(doc.now);
  }

  function live(state, text) {
    $("live").dataset.state = state;
    $("live-text").textContent = text;
  }

  async function poll() {
    timer = null;
    inFlight = true;
    let delay = 2000;
    try {
      const response = await fetch("status.json", { cache: "no-store", credentials: "same-origin" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const doc = await response.json();
      render(doc);
      failures = 0;
      live("live", "updated " + clock(doc.now));
      delay = Math.max(1000, doc.interval * 1000);
    } catch (error) {
      failures += 1;
      live("stale", "no answer from fleet (" + error.message + "); retrying");
      delay = Math.min(30000, 2000 * 2 ** Math.min(failures, 4));
    }
    inFlight = false;
    if (!document.hidden) timer = setTimeout(poll, delay);
  }

  // A hidden tab stops polling; it catches up when shown again.
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && timer === null && !inFlight) poll();
  });
  poll();
})();
