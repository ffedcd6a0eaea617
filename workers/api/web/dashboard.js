// Castwork latency dashboard: fetches /v1/ops/turns and draws the charts as inline SVG.
// No libraries and nothing from elsewhere (the page's CSP allows only this origin).
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const STAGES = [
    "endpointing", "asr", "llm_first_token", "first_piece", "tts_first_audio", "send",
    "tool_decision", "tool_call",
  ];
  const LABELS = {
    endpointing: "endpointing", asr: "ASR", llm_first_token: "LLM first token",
    first_piece: "first piece", tts_first_audio: "TTS first audio", send: "send",
    tool_decision: "tool decided", tool_call: "tool call",
    voice_to_voice: "voice-to-voice",
  };
  const KEY_STORAGE = "castwork.opsKey";
  const REFRESH_MS = 5000;
  const $ = (id) => document.getElementById(id);

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svg(width, height) {
    return el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  }

  function niceMax(v) {
    if (!(v > 0)) return 100;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  // A y axis with 4 gridlines, labels in ms; returns the y scale.
  function yAxis(root, box, max) {
    const scale = (v) => box.y + box.h - (v / max) * box.h;
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      const y = scale(v);
      root.append(el("line", { class: "axis", x1: box.x, x2: box.x + box.w, y1: y, y2: y }));
      root.append(el("text", { x: box.x - 6, y: y + 4, "text-anchor": "end" }, `${Math.round(v)}`));
    }
    return scale;
  }

  function empty(root, w, h, message) {
    root.append(el("text", { class: "empty", x: w / 2, y: h / 2, "text-anchor": "middle" }, message));
  }

  function clock(ts) {
    return new Date(ts * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function drawSeries(target, data) {
    const w = 900, h = 240, box = { x: 50, y: 10, w: 830, h: 190 };
    const root = svg(w, h);
    const pts = data.series.filter((p) => p.n > 0);
    target.dataset.points = String(pts.length);
    if (!pts.length) empty(root, w, h, "no turns in this window");
    else {
      const max = niceMax(Math.max(...pts.map((p) => p.p95)));
      const y = yAxis(root, box, max);
      const span = Math.max(data.until - data.since, 1);
      const x = (t) => box.x + ((t - data.since) / span) * box.w;
      for (const [key, cls] of [["p50", "p50"], ["p95", "p95"]]) {
        const d = pts.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" ");
        root.append(el("path", { class: cls, d }));
        for (const p of pts) {
          const dot = el("circle", { class: cls === "p50" ? "dot50" : "dot95", cx: x(p.t), cy: y(p[key]), r: 3 });
          dot.append(el("title", {}, `${clock(p.t)}  ${key.toUpperCase()} ${Math.round(p[key])} ms (${p.n} turns)`));
          root.append(dot);
        }
      }
      root.append(el("text", { x: box.x, y: h - 8 }, clock(data.since)));
      root.append(el("text", { x: box.x + box.w, y: h - 8, "text-anchor": "end" }, clock(data.until)));
      root.append(el("text", { x: box.x + box.w / 2 - 40, y: h - 8, class: "dot50" }, "— P50"));
      root.append(el("text", { x: box.x + box.w / 2 + 10, y: h - 8, class: "dot95" }, "— P95"));
    }
    target.replaceChildren(root);
  }

  function drawStages(target, data) {
    const w = 900, h = 260, box = { x: 50, y: 10, w: 830, h: 220 };
    const root = svg(w, h);
    const turns = data.recent;
    let bars = 0;
    if (!turns.length) empty(root, w, h, "no turns in this window");
    else {
      const totals = turns.map((t) => STAGES.reduce((a, s) => a + (t.stages[s] || 0), 0));
      const max = niceMax(Math.max(...totals, 1));
      const y = yAxis(root, box, max);
      const slot = box.w / turns.length;
      const bw = Math.max(2, slot * 0.7);
      turns.forEach((t, i) => {
        let acc = 0;
        const x = box.x + i * slot + (slot - bw) / 2;
        for (const s of STAGES) {
          const v = t.stages[s];
          if (!v) continue;
          const rect = el("rect", {
            class: `stage s-${s}`, x: x.toFixed(1), width: bw.toFixed(1),
            y: y(acc + v).toFixed(1), height: Math.max(0.5, y(acc) - y(acc + v)).toFixed(1),
            "data-stage": s, "data-ms": v,
          });
          rect.append(el("title", {}, `${clock(t.ts)} ${t.turn_id} (${t.outcome}): ${LABELS[s]} ${Math.round(v)} ms`));
          root.append(rect);
          acc += v;
        }
        if (acc > 0) bars += 1;
      });
    }
    target.dataset.bars = String(bars);
    target.replaceChildren(root);
  }

  function drawHistogram(target, data) {
    const w = 560, h = 240, box = { x: 40, y: 10, w: 500, h: 190 };
    const root = svg(w, h);
    const { edges_ms: edges, counts } = data.histogram;
    const total = counts.reduce((a, b) => a + b, 0);
    target.dataset.total = String(total);
    if (!total) empty(root, w, h, "no voice-to-voice yet");
    else {
      // Whole turns: a multiple of 4 keeps the four gridlines on whole numbers.
      const max = Math.max(4, Math.ceil(Math.max(...counts) / 4) * 4);
      const y = yAxis(root, box, max);
      const bw = box.w / counts.length;
      counts.forEach((c, i) => {
        if (!c) return;
        const rect = el("rect", { class: "hist", x: box.x + i * bw + 1, width: bw - 2, y: y(c), height: y(0) - y(c) });
        rect.append(el("title", {}, `${Math.round(edges[i])}-${Math.round(edges[i + 1])} ms: ${c} turns`));
        root.append(rect);
      });
      for (const i of [0, Math.floor(counts.length / 2), counts.length]) {
        root.append(el("text", { x: box.x + i * bw, y: h - 22, "text-anchor": "middle" }, `${Math.round(edges[i])}`));
      }
      root.append(el("text", { x: box.x + box.w / 2, y: h - 6, "text-anchor": "middle" }, "voice-to-voice, ms"));
    }
    target.replaceChildren(root);
  }

  function row(cells, header) {
    const tr = document.createElement("tr");
    cells.forEach((c, i) => {
      const td = document.createElement(header && i === 0 ? "th" : "td");
      td.textContent = c;
      tr.append(td);
    });
    return tr;
  }

  function drawTables(data) {
    const rec = $("recovery").tBodies[0];
    const rows = [];
    for (const [k, v] of Object.entries(data.outcomes)) rows.push(row([`outcome ${k}`, `${v}`], true));
    for (const [k, v] of Object.entries(data.recovery)) {
      rows.push(row([`recovery ${k}`, `${v.turns} (${(100 * v.rate).toFixed(1)}%)`], true));
    }
    if (!rows.length) rows.push(row(["no turns", ""], true));
    rec.replaceChildren(...rows);
    const stats = $("stats").tBodies[0];
    const srows = [];
    for (const key of ["voice_to_voice", ...STAGES]) {
      const s = data.stats[key];
      if (!s) continue;
      srows.push(row([LABELS[key], `${s.count}`, ...[s.p50, s.p95, s.p99, s.max].map((v) => `${Math.round(v)}`)]));
    }
    stats.replaceChildren(...srows);
  }

  function legend() {
    $("legend").replaceChildren(...STAGES.map((s) => {
      const span = document.createElement("span");
      const i = document.createElement("i");
      i.className = `s-${s}`;
      span.append(i, LABELS[s]);
      return span;
    }));
  }

  function render(data) {
    $("live").textContent = data.live_sessions === null ? "n/a" : `${data.live_sessions}`;
    $("live").title = data.live_sessions === null ? "the voice server runs in another process" : "";
    $("turns").textContent = `${data.turns}`;
    const v = data.stats.voice_to_voice;
    $("p50").textContent = v ? `${Math.round(v.p50)} ms` : "-";
    $("p95").textContent = v ? `${Math.round(v.p95)} ms` : "-";
    $("source").textContent = `Log: ${data.turn_log}`;
    drawSeries($("chart-series"), data);
    drawStages($("chart-stages"), data);
    drawHistogram($("chart-histogram"), data);
    drawTables(data);
    document.body.dataset.updated = String(Date.now());
  }

  let timer = null;
  async function refresh() {
    clearTimeout(timer);
    const key = sessionStorage.getItem(KEY_STORAGE) || "";
    const headers = key ? { Authorization: `Bearer ${key}` } : {};
    try {
      const res = await fetch(`/v1/ops/turns?window=${encodeURIComponent($("window").value)}`, { headers });
      if (res.status === 401 || res.status === 403) {
        const body = await res.json().catch(() => ({}));
        $("key-row").hidden = false;
        $("status").textContent = (body.error && body.error.message) || "an operator key is needed";
      } else if (!res.ok) {
        $("status").textContent = `the server answered ${res.status}`;
      } else {
        render(await res.json());
        $("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
      }
    } catch (err) {
      $("status").textContent = `cannot reach the server (${err.message})`;
    }
    timer = setTimeout(refresh, REFRESH_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    legend();
    const params = new URLSearchParams(location.search);
    if (params.get("window")) $("window").value = params.get("window");
    $("window").addEventListener("change", refresh);
    $("save-key").addEventListener("click", () => {
      sessionStorage.setItem(KEY_STORAGE, $("ops-key").value.trim());
      refresh();
    });
    refresh();
  });
})();
