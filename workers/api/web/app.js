// Castwork merchant page: submit an ad job, follow its progress, play and download the result.
// Plain JS against the JSON API (/v1/...); no build step, nothing loaded from elsewhere.
"use strict";

(() => {
  const KEY_STORAGE = "castwork.apiKey";
  const POLL_MS = 1000;
  const TERMINAL = new Set(["done", "failed", "cancelled"]);
  const STAGES = {
    queued: "Waiting for a worker",
    prepare: "Preparing photos",
    narrate: "Writing and recording the voice-over",
    finalize: "Finishing up",
    done: "Done",
    failed: "Failed",
    cancelled: "Cancelled",
  };
  const FIELDS = ["template", "headline", "price", "cta", "description", "store", "language", "caption_style", "narration_script", "webhook_url"];

  const $ = (id) => document.getElementById(id);
  const state = { config: null, jobId: null, timer: null, polling: false };

  class ApiError extends Error {
    constructor(status, error) {
      super(error.message || `HTTP ${status}`);
      this.status = status;
      this.code = error.code || "";
      this.field = error.field || null;
    }
  }

  // --- API ---------------------------------------------------------------------------

  function apiKey() {
    return localStorage.getItem(KEY_STORAGE) || "";
  }

  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    // A header no form on another site can send: without API keys the server wants it on
    // every request that changes something (cross-site request forgery).
    headers.set("X-Castwork-CSRF", "1");
    const key = apiKey();
    if (key) headers.set("Authorization", `Bearer ${key}`);
    const response = await fetch(path, { ...options, headers });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      if (response.status === 401) showAuth("That API key was not accepted. Enter yours above.");
      throw new ApiError(response.status, body.error || {});
    }
    return body;
  }

  // A fresh key per submission: a retry after a network error must not make a second job.
  function idempotencyKey() {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function postJob(form, key) {
    // Retried with the same key when the network fails: the server answers with the same job.
    for (let attempt = 1; ; attempt++) {
      try {
        return await api("/v1/jobs", { method: "POST", body: form, headers: { "Idempotency-Key": key } });
      } catch (err) {
        const retry = !(err instanceof ApiError) || err.status >= 500;
        if (!retry || attempt >= 3) throw err;
        await sleep(700 * attempt);
      }
    }
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // --- Set-up ------------------------------------------------------------------------

  async function init() {
    $("job-form").addEventListener("submit", onSubmit);
    $("key-form").addEventListener("submit", onSaveKey);
    $("images").addEventListener("change", showPreviews);
    $("template").addEventListener("change", describeTemplate);
    $("cancel").addEventListener("click", onCancel);
    $("suggest").addEventListener("click", onSuggest);
    $("keep-brand").addEventListener("click", onKeepBrand);
    $("refresh").addEventListener("click", () => loadRecent());
    $("api-key").value = apiKey();
    try {
      state.config = await api("/v1/config");
    } catch (err) {
      showFormError(`The server does not answer: ${err.message}`);
      return;
    }
    $("max-images").textContent = String(state.config.max_images);
    if (state.config.auth_required) {
      $("auth").hidden = false;
      if (!apiKey()) showAuth("This server needs an API key.");
    }
    const kit = !state.config.auth_required || apiKey() ? showKit().catch(() => {}) : null;
    await Promise.all([loadTemplates(), loadRecent(), kit]);
  }

  function showAuth(message) {
    $("auth").hidden = false;
    $("auth").open = true;
    $("auth-status").textContent = message;
  }

  async function onSaveKey(event) {
    event.preventDefault();
    localStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
    $("auth-status").textContent = "Checking…";
    try {
      await loadRecent(true);
      $("auth-status").textContent = "Key saved.";
      showKit().catch(() => {});
      $("auth").open = false;
    } catch (err) {
      $("auth-status").textContent = err.message;
    }
  }

  async function loadTemplates() {
    const select = $("template");
    try {
      const { templates } = await api("/v1/templates");
      select.replaceChildren(
        ...templates.map((t) => {
          const option = new Option(t.name, t.id);
          option.dataset.description = t.description;
          return option;
        }),
      );
      // Alphabetical from the API; the bundled default goes first in people's minds.
      if (templates.some((t) => t.id === "showcase")) select.value = "showcase";
      describeTemplate();
    } catch (err) {
      showFormError(`Templates could not be loaded: ${err.message}`);
    }
  }

  function describeTemplate() {
    const option = $("template").selectedOptions[0];
    $("template-about").textContent = option ? option.dataset.description || "" : "";
  }

  function showPreviews() {
    const list = $("photo-previews");
    for (const el of list.querySelectorAll("img, video")) URL.revokeObjectURL(el.src);
    list.replaceChildren(
      ...Array.from($("images").files, (file) => {
        const item = document.createElement("li");
        // A clip previews as a silent, looping video; a photo as an image.
        const clip = file.type.startsWith("video/");
        const el = document.createElement(clip ? "video" : "img");
        el.src = URL.createObjectURL(file);
        if (clip) Object.assign(el, { muted: true, loop: true, autoplay: true, playsInline: true });
        else el.alt = file.name;
        item.append(el);
        return item;
      }),
    );
  }

  // --- Submitting --------------------------------------------------------------------

  function clearErrors() {
    for (const el of document.querySelectorAll(".field-error")) el.hidden = true;
    for (const el of document.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    $("form-error").hidden = true;
  }

  function showFormError(message) {
    $("form-error").textContent = message;
    $("form-error").hidden = false;
  }

  function showFieldError(field, message) {
    const target = field === "formats" ? $("formats") : $(field);
    const slot = $(`${field}-error`);
    if (!target || !slot) {
      showFormError(message);
      return;
    }
    target.setAttribute("aria-invalid", "true");
    slot.textContent = message;
    slot.hidden = false;
    (field === "formats" ? target.querySelector("input") : target).focus();
  }

  // What the browser can tell before uploading anything.
  function checkLocally() {
    const files = Array.from($("images").files);
    const config = state.config || { max_images: 8, max_image_mb: 20, max_request_mb: 80 };
    if (!$("headline").value.trim()) return ["headline", "Enter a headline."];
    if (!checkedFormats().length) return ["formats", "Choose at least one format."];
    if (!files.length) return ["images", "Choose at least one product photo."];
    if (files.length > config.max_images) {
      return ["images", `Choose at most ${config.max_images} photos (you chose ${files.length}).`];
    }
    const logo = $("logo").files[0];
    for (const [field, limit] of [["font", config.max_font_mb || 20], ["music_track", config.max_track_mb || 30]]) {
      const file = $(field).files[0];
      if (file && file.size > limit * 1024 * 1024) return [field, `${file.name} is larger than ${limit} MB.`];
    }
    const all = logo ? [...files, logo] : files;
    const limitOf = (f) => (f.type.startsWith("video/") ? config.max_clip_mb || 100 : config.max_image_mb);
    const big = all.find((f) => f.size > limitOf(f) * 1024 * 1024);
    if (big) return [big === logo ? "logo" : "images", `${big.name} is larger than ${limitOf(big)} MB.`];
    const total = all.reduce((sum, f) => sum + f.size, 0);
    if (total > config.max_request_mb * 1024 * 1024) {
      return ["images", `Together the files are larger than ${config.max_request_mb} MB.`];
    }
    return null;
  }

  function checkedFormats() {
    return Array.from(document.querySelectorAll('input[name="formats"]:checked'), (el) => el.value);
  }

  function formData() {
    const form = new FormData();
    for (const name of FIELDS) {
      const value = $(name).value.trim();
      if (value) form.append(name, value);
    }
    for (const format of checkedFormats()) form.append("formats", format);
    // Unchecked boxes are not sent by the browser; the API must hear "false".
    for (const name of ["captions", "music", "narration"]) form.append(name, String($(name).checked));
    // Colours picked here win over the brand kept on the server for this ad only.
    if ($("use_brand").checked) {
      form.append("brand_primary", $("brand_primary").value.toUpperCase());
      form.append("brand_accent", $("brand_accent").value.toUpperCase());
    }
    if (!$("use_kit").checked) form.append("brand", "false");
    for (const file of $("images").files) form.append("images", file, file.name);
    for (const name of ["logo", "font", "music_track"]) {
      const file = $(name).files[0];
      if (file) form.append(name, file, file.name);
    }
    return form;
  }

  // --- Brand kit ---------------------------------------------------------------------

  async function showKit() {
    const kit = await api("/v1/brand");
    const parts = [];
    if (kit.primary) parts.push(`colours ${kit.primary} and ${kit.accent}`);
    if (kit.logo) parts.push(`logo ${kit.logo.name}`);
    if (kit.font) parts.push(`font ${kit.font.details.family} (${kit.font.details.languages.join(", ")})`);
    if (kit.music_track) parts.push(`music ${kit.music_track.name} (${kit.music_track.details.seconds_used} s)`);
    $("brand-status").textContent = parts.length ? `Kept brand kit: ${parts.join(", ")}.` : "No brand kit kept yet.";
  }

  async function onKeepBrand() {
    const button = $("keep-brand");
    button.disabled = true;
    $("brand-status").textContent = "Checking and keeping…";
    try {
      if ($("use_brand").checked) {
        const colours = { primary: $("brand_primary").value.toUpperCase(), accent: $("brand_accent").value.toUpperCase() };
        await api("/v1/brand", { method: "PUT", body: JSON.stringify(colours), headers: { "Content-Type": "application/json" } });
      }
      for (const part of ["logo", "font", "music_track"]) {
        const file = $(part).files[0];
        if (!file) continue;
        const form = new FormData();
        form.append("file", file, file.name);
        await api(`/v1/brand/${part}`, { method: "PUT", body: form });
      }
      await showKit();
    } catch (err) {
      $("brand-status").textContent = `Not kept: ${err.message}`;
    } finally {
      button.disabled = false;
    }
  }

  async function onSubmit(event) {
    event.preventDefault();
    clearErrors();
    const problem = checkLocally();
    if (problem) {
      showFieldError(...problem);
      return;
    }
    const button = $("submit");
    button.disabled = true;
    button.textContent = "Uploading…";
    try {
      const job = await postJob(formData(), idempotencyKey());
      showJob(job);
      loadRecent();
    } catch (err) {
      if (err instanceof ApiError && err.field) showFieldError(err.field, err.message);
      else showFormError(err instanceof ApiError ? err.message : `Upload failed: ${err.message}`);
    } finally {
      button.disabled = false;
      button.textContent = "Make my ad";
    }
  }

  // --- Following a job ---------------------------------------------------------------

  function stageLabel(job) {
    if (STAGES[job.stage]) return STAGES[job.stage];
    if (job.stage.startsWith("render ")) return `Rendering ${job.stage.slice(7)}`;
    return job.stage || job.status;
  }

  function showJob(job) {
    const changed = state.jobId !== job.id;
    state.jobId = job.id;
    $("job").hidden = false;
    $("job").dataset.status = job.status;
    $("job").dataset.jobId = job.id;
    $("job-headline").textContent = job.fields.headline || "";
    $("stage").textContent = stageLabel(job);
    $("percent").textContent = `${Math.round(job.percent)}%`;
    $("progress").value = job.percent;
    $("cancel").hidden = TERMINAL.has(job.status);
    $("job-progress").hidden = job.status === "done";
    $("job-error").hidden = !job.error && job.status !== "cancelled";
    $("job-error").textContent = job.error ? job.error.message : "This job was cancelled.";
    if (changed) $("results").replaceChildren();
    if (job.status === "done" && !$("results").childElementCount) showResults(job);
    if (changed) $("job").scrollIntoView({ behavior: "smooth", block: "nearest" });
    if (!TERMINAL.has(job.status)) schedulePoll();
  }

  function schedulePoll() {
    clearTimeout(state.timer);
    state.timer = setTimeout(poll, POLL_MS);
  }

  async function poll() {
    const id = state.jobId;
    try {
      const job = await api(`/v1/jobs/${encodeURIComponent(id)}`);
      if (id !== state.jobId) return; // another job was opened meanwhile
      showJob(job);
      if (TERMINAL.has(job.status)) loadRecent();
    } catch (err) {
      if (err instanceof ApiError && err.status < 500) {
        $("job-error").textContent = err.message;
        $("job-error").hidden = false;
        return;
      }
      schedulePoll(); // the network or the server hiccupped: keep following
    }
  }

  function showResults(job) {
    const figures = job.outputs.map((out) => {
      const figure = document.createElement("figure");
      const video = document.createElement("video");
      video.src = out.video_url;
      video.poster = out.thumbnail_url;
      video.controls = true;
      video.playsInline = true;
      video.preload = "metadata";
      video.dataset.format = out.format;
      video.setAttribute("aria-label", `${out.format} video ad`);
      const caption = document.createElement("figcaption");
      const title = document.createElement("strong");
      title.textContent = out.duration_s ? `${out.format} · ${out.duration_s.toFixed(1)} s` : out.format;
      const thumb = document.createElement("img");
      thumb.className = "thumb";
      thumb.src = out.thumbnail_url;
      thumb.alt = `${out.format} thumbnail`;
      caption.append(
        title,
        thumb,
        link(out.video_url, `castwork-${job.id}-${out.format.replace(":", "x")}.mp4`, "Video"),
        link(out.thumbnail_url, `castwork-${job.id}-${out.format.replace(":", "x")}.jpg`, "Thumbnail"),
      );
      figure.append(video, caption);
      return figure;
    });
    $("results").replaceChildren(...figures, ...brandNote(job), ...qualityReport(job));
  }

  // Why the brand font did not set this ad's text (it lacks some of its characters).
  function brandNote(job) {
    if (!job.brand || !job.brand.font_note) return [];
    const note = document.createElement("p");
    note.className = "hint brand-note";
    note.textContent = `Brand font not used: ${job.brand.font_note}.`;
    return [note];
  }

  // Each output's quality report: what failed or needs a look, in plain words.
  function qualityReport(job) {
    if (!job.quality) return [];
    const box = document.createElement("section");
    box.className = job.quality.flagged ? "quality flagged" : "quality";
    const title = document.createElement("h3");
    title.textContent = job.quality.flagged
      ? "Quality check: look before you send this ad"
      : "Quality check: passed";
    const list = document.createElement("ul");
    for (const [format, checks] of Object.entries(job.quality.outputs)) {
      for (const check of checks) {
        if (check.status === "pass" || check.status === "skipped") continue;
        const item = document.createElement("li");
        item.dataset.status = check.status;
        item.textContent = `${format} ${check.name} (${check.status}): ${check.detail}`;
        list.append(item);
      }
    }
    const passed = Object.values(job.quality.outputs).flat().filter((c) => c.status === "pass").length;
    const summary = document.createElement("p");
    summary.textContent = `${passed} checks passed (loudness, true peak, black and frozen frames, captions, end-card text).`;
    box.append(title, summary, list);
    return [box];
  }

  // --- Copy drafts ---------------------------------------------------------------------

  async function onSuggest() {
    clearErrors();
    const product = $("headline").value.trim();
    if (!product) {
      showFieldError("headline", "Enter the product's name first: drafts are written from it.");
      return;
    }
    const body = { product, template: $("template").value, language: $("language").value };
    for (const [name, id] of [["price", "price"], ["store", "store"], ["notes", "description"]]) {
      const value = $(id).value.trim();
      if (value) body[name] = value;
    }
    $("suggest").disabled = true;
    $("suggest-status").textContent = "Writing drafts…";
    $("drafts").replaceChildren();
    try {
      showDrafts(await api("/v1/copy/drafts", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      }));
    } catch (err) {
      $("suggest-status").textContent = `No drafts: ${err.message}`;
    } finally {
      $("suggest").disabled = false;
    }
  }

  function showDrafts(result) {
    $("suggest-status").textContent = result.source === "template"
      ? `No model wrote a usable draft (${result.reason}); here is the template's copy.`
      : `${result.drafts.length} draft(s) by ${result.source.replace(/^llm:/, "")} in ${result.seconds} s. Pick one:`;
    const cards = result.drafts.map((draft, i) => {
      const card = document.createElement("button");
      card.type = "button";
      card.className = "draft";
      card.dataset.draft = String(i);
      for (const [label, text] of [["Headline", draft.headline], ["Subline", draft.subline],
        ["Call to action", draft.cta], ["Narration", draft.narration]]) {
        const line = document.createElement("span");
        const name = document.createElement("strong");
        name.textContent = `${label}: `;
        line.append(name, text);
        card.append(line);
      }
      card.addEventListener("click", () => pickDraft(draft, card));
      return card;
    });
    $("drafts").replaceChildren(...cards);
  }

  function pickDraft(draft, card) {
    $("headline").value = draft.headline;
    $("description").value = draft.subline;
    $("cta").value = draft.cta;
    $("narration_script").value = draft.narration;
    for (const other of document.querySelectorAll(".draft")) other.classList.toggle("picked", other === card);
  }

  function link(href, filename, text) {
    const a = document.createElement("a");
    a.href = href;
    a.download = filename;
    a.textContent = `Download ${text.toLowerCase()}`;
    return a;
  }

  async function onCancel() {
    try {
      showJob(await api(`/v1/jobs/${encodeURIComponent(state.jobId)}/cancel`, { method: "POST" }));
      loadRecent();
    } catch (err) {
      $("job-error").textContent = err.message;
      $("job-error").hidden = false;
    }
  }

  // --- Recent jobs -------------------------------------------------------------------

  async function loadRecent(rethrow = false) {
    if (state.config && state.config.auth_required && !apiKey()) return;
    let jobs;
    try {
      ({ jobs } = await api("/v1/jobs?limit=10"));
    } catch (err) {
      if (rethrow) throw err;
      return;
    }
    $("recent-empty").hidden = jobs.length > 0;
    $("recent-list").replaceChildren(...jobs.map(recentItem));
  }

  function recentItem(job) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = job.fields.headline || job.id;
    const badge = document.createElement("span");
    badge.className = `badge ${job.status}`;
    badge.textContent = job.status === "running" ? `${Math.round(job.percent)}%` : job.status;
    const when = document.createElement("time");
    when.className = "when";
    const created = new Date(job.created * 1000);
    when.dateTime = created.toISOString();
    when.textContent = created.toLocaleString([], { dateStyle: "short", timeStyle: "short" });
    button.append(title, badge, when);
    button.setAttribute("aria-label", `${title.textContent}: ${job.status}`);
    button.addEventListener("click", () => showJob(job));
    item.append(button);
    return item;
  }

  document.addEventListener("DOMContentLoaded", init);
})();
