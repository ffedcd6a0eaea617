// The talk page: the microphone streams to the Realtime WebSocket as 24 kHz PCM16, the answer
// plays back gaplessly through an AudioWorklet, speaking over it stops playback at once and
// tells the server how much was heard (conversation.item.truncate). No framework, no CDN.
"use strict";

const RATE = 24000;
const $ = (id) => document.getElementById(id);
const ui = {
  start: $("start"), stop: $("stop"), state: $("state"), error: $("error"),
  transcript: $("transcript"), turns: document.querySelector("#turns tbody"),
};

let ws = null;
let ctx = null;
let mic = null;
let player = null;
let enqueued = 0; // answer samples handed to the player so far
let played = 0; // of which played
let current = null; // the answer item playing: {id, start, length}
const cut = new Set(); // answer items the caller interrupted: their late audio is dropped
const bubbles = new Map(); // item id -> <li>
let lastCut = null; // ms of the last answer heard before an interruption, not yet shown

function say(state) {
  ui.state.textContent = state;
}

function fail(message) {
  ui.error.textContent = message;
  ui.error.hidden = false;
}

function bubble(itemId, who) {
  let li = bubbles.get(itemId);
  if (!li) {
    li = document.createElement("li");
    li.className = who;
    li.dataset.item = itemId;
    bubbles.set(itemId, li);
    ui.transcript.appendChild(li);
  }
  return li;
}

function toBase64(int16) {
  const bytes = new Uint8Array(int16.buffer);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

function pcm16(float32) {
  const out = new Int16Array(float32.length);
  for (let i = 0; i < float32.length; i++) {
    const s = Math.max(-1, Math.min(1, float32[i]));
    out[i] = s < 0 ? s * 0x8000 : s * 0x7fff;
  }
  return out;
}

function floats(base64) {
  const raw = atob(base64);
  const out = new Float32Array(raw.length >> 1);
  for (let i = 0; i < out.length; i++) {
    let v = raw.charCodeAt(2 * i) | (raw.charCodeAt(2 * i + 1) << 8);
    if (v >= 0x8000) v -= 0x10000;
    out[i] = v / 0x8000;
  }
  return out;
}

function send(event) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(event));
}

async function secret(config) {
  const fromLink = location.hash.match(/^#(ek_[A-Za-z0-9_-]+)$/);
  if (fromLink) {
    history.replaceState(null, "", location.pathname); // used once: not left in the address bar
    return fromLink[1];
  }
  if (!config.secret_url) {
    throw new Error("this server has API keys: open the page with a client secret from your " +
      "backend (POST /v1/realtime/client_secrets), as /talk#ek_...");
  }
  const r = await fetch(config.secret_url, {
    method: "POST", headers: { "X-Castwork-CSRF": "1", "Content-Type": "application/json" },
    body: "{}",
  });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error ? body.error.message : `secret: HTTP ${r.status}`);
  return body.value;
}

function realtimeUrl(config) {
  const url = new URL(config.realtime_url, location.href);
  url.protocol = url.protocol === "https:" || url.protocol === "wss:" ? "wss:" : "ws:";
  url.searchParams.set("castwork_turns", "1"); // per-turn timings for the table
  return url.toString();
}

function interrupt() {
  // The caller speaks over the answer: silence it now; the player says how much was heard.
  if (current && played < enqueued) {
    cut.add(current.id);
    player.port.postMessage("clear");
  }
}

function onPlayer(message) {
  played = message.played;
  if (message.cleared && current) {
    const heard = Math.max(0, Math.min(played - current.start, current.length));
    const ms = Math.round((heard * 1000) / RATE);
    send({ type: "conversation.item.truncate", item_id: current.id, content_index: 0, audio_end_ms: ms });
    bubble(current.id, "agent").classList.add("cut");
    lastCut = ms;
    fillHeard();
    enqueued = played; // nothing is queued any more
    current = null;
  }
  if (message.idle && !message.cleared && ui.state.textContent === "answering") say("listening");
}

function onEvent(event) {
  switch (event.type) {
    case "session.created":
      say("listening");
      break;
    case "input_audio_buffer.speech_started":
      say("hearing you");
      interrupt();
      break;
    case "input_audio_buffer.speech_stopped":
      say("thinking");
      break;
    case "conversation.item.input_audio_transcription.completed":
      bubble(event.item_id, "user").textContent = event.transcript;
      break;
    case "response.output_audio.delta": {
      if (cut.has(event.item_id)) break;
      const samples = floats(event.delta);
      if (!current || current.id !== event.item_id) {
        current = { id: event.item_id, start: enqueued, length: 0 };
      }
      current.length += samples.length;
      enqueued += samples.length;
      player.port.postMessage(samples, [samples.buffer]);
      say("answering");
      break;
    }
    case "response.output_audio_transcript.delta":
    case "response.output_text.delta":
      bubble(event.item_id, "agent").textContent += event.delta;
      break;
    case "castwork.turn":
      addTurn(event);
      break;
    case "conversation.item.truncated": // the server took what was heard as the answer
      bubble(event.item_id, "agent").dataset.truncated = String(event.audio_end_ms);
      break;
    case "error":
      fail(`${event.error.code || event.error.type}: ${event.error.message}`);
      break;
  }
}

function addTurn(event) {
  const d = event.durations_ms || {};
  const ms = (v) => (v === undefined ? "–" : `${Math.round(v)} ms`);
  const interrupted = (event.recovery || []).includes("barge_in");
  const tr = document.createElement("tr");
  tr.dataset.outcome = event.outcome;
  for (const cell of [event.turn_id, ms(d.voice_to_voice), ms(d.endpointing), ms(d.asr),
    ms(d.llm_first_token), ms(d.first_piece), ms(d.tts_first_audio), interrupted ? "cut" : "all"]) {
    const td = document.createElement("td");
    td.textContent = cell;
    tr.appendChild(td);
  }
  ui.turns.appendChild(tr);
  fillHeard();
}

function fillHeard() {
  // The turn's record and the player's count of what was heard arrive in either order.
  const cells = ui.turns.querySelectorAll("tr td:last-child");
  const last = cells[cells.length - 1];
  if (last && last.textContent === "cut" && lastCut !== null) {
    last.textContent = `${lastCut} ms`;
    lastCut = null;
  }
}

async function start() {
  ui.start.disabled = true;
  ui.error.hidden = true;
  try {
    say("connecting");
    const config = await (await fetch("talk/config")).json();
    const value = await secret(config);
    mic = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
    ctx = new AudioContext({ sampleRate: RATE });
    await ctx.audioWorklet.addModule("talk/worklets.js");
    await ctx.resume();
    player = new AudioWorkletNode(ctx, "castwork-player", { outputChannelCount: [1] });
    player.port.onmessage = (e) => onPlayer(e.data);
    player.connect(ctx.destination);
    const capture = new AudioWorkletNode(ctx, "castwork-capture");
    const mute = ctx.createGain();
    mute.gain.value = 0;
    ctx.createMediaStreamSource(mic).connect(capture).connect(mute).connect(ctx.destination);
    // A browser cannot set headers on a WebSocket: the secret rides in the subprotocol list.
    ws = new WebSocket(realtimeUrl(config), ["realtime", `openai-insecure-api-key.${value}`]);
    ws.onmessage = (e) => onEvent(JSON.parse(e.data));
    ws.onclose = (e) => {
      if (e.code !== 1000) fail(`connection closed: ${e.code} ${e.reason || ""}`.trim());
      stop();
    };
    capture.port.onmessage = (e) => {
      send({ type: "input_audio_buffer.append", audio: toBase64(pcm16(e.data)) });
    };
    ui.stop.disabled = false;
  } catch (err) {
    fail(err.message || String(err));
    stop();
  }
}

function stop() {
  if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000);
  ws = null;
  if (mic) mic.getTracks().forEach((t) => t.stop());
  mic = null;
  if (ctx) ctx.close();
  ctx = null;
  current = null;
  enqueued = played = 0;
  ui.start.disabled = false;
  ui.stop.disabled = true;
  say("idle");
}

ui.start.addEventListener("click", start);
ui.stop.addEventListener("click", stop);
