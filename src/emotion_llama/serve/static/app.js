// Emotion-LLaMA web page: plain JS, no framework, no build step.
//
// On submit (see docs/serving.md, "The web page"):
//   1. the clip is uploaded once: POST /v1/files -> {id, url: "upload://ID"};
//   2. POST /v1/chat/completions with stream: true and the clip as a video_url part, read as
//      server-sent events with fetch + ReadableStream. The server's first content is the line
//      "Emotion: LABEL" (sent as soon as perception is done, before any reasoning): the label is
//      shown from it; the reasoning (or the answer to the question) then streams in word by word;
//      the last chunk's `emotion` field carries the clues (transcript, expression, tone,
//      candidate labels, missing clues, scores, timings);
//   3. the peak frame and the AU timeline: taken from that last chunk when the server puts them
//      there (`emotion.peak_frame_jpeg`, `emotion.au_timeline`), else from POST /v1/analyze on the
//      same file (one more predictor run, after the reasoning is already on screen).
// The stream goes first because it gives the label after perception alone and the reasoning as it
// is written; /v1/analyze answers only when everything (the reasoning included) is done.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY_STORE = "emotion-llama.api-key";

  const els = {
    form: $("form"), file: $("file"), subtitle: $("subtitle"), question: $("question"),
    apikey: $("apikey"), keyBox: $("key-box"), submit: $("submit"),
    recordBox: $("record-box"), record: $("record"), recordStop: $("record-stop"),
    recordStatus: $("record-status"), preview: $("preview"),
    progress: $("progress"), progressText: $("progress-text"), progressBar: $("progress-bar"),
    error: $("error"), results: $("results"),
    label: $("label"), labelSource: $("label-source"), scores: $("scores"),
    reasoning: $("reasoning"), reasoningTitle: $("reasoning-title"),
    peakFigure: $("peak-figure"), peakFrame: $("peak-frame"), peakCaption: $("peak-caption"),
    peakNone: $("peak-none"),
    canvas: $("au-canvas"), legend: $("au-legend"), auPng: $("au-png"), timelineNone: $("timeline-none"),
    transcript: $("clue-transcript"), expression: $("clue-expression"), aus: $("clue-aus"),
    tone: $("clue-tone"), candidates: $("clue-candidates"), timings: $("clue-timings"),
    votes: $("clue-votes"), conflict: $("clue-conflict"), reasoningSource: $("clue-reasoning-source"),
    missingBox: $("missing-box"), missing: $("missing"),
  };

  // FACS names of the AUs the perception reports (emotion_llama.perception.action_units.AU_NAMES).
  const AU_NAMES = {
    AU01: "inner brow raiser", AU02: "outer brow raiser", AU04: "brow lowerer", AU05: "upper lid raiser",
    AU06: "cheek raiser", AU07: "lid tightener", AU09: "nose wrinkler", AU10: "upper lip raiser",
    AU12: "lip corner puller", AU14: "dimpler", AU15: "lip corner depressor", AU17: "chin raiser",
    AU20: "lip stretcher", AU23: "lip tightener", AU25: "lips part", AU26: "jaw drop", AU28: "lip suck",
    AU45: "blink",
  };
  // The recorded clip (a Blob) when the user recorded one; a chosen file replaces it.
  let recorded = null;
  // The last drawn timeline, redrawn when the canvas changes size.
  let lastTimeline = null;
  let lastPeakTime = null;

  // ---- API key (kept in localStorage) -----------------------------------------------------------
  try {
    const saved = localStorage.getItem(KEY_STORE);
    if (saved) { els.apikey.value = saved; els.keyBox.open = true; }
  } catch (_) { /* storage may be disabled */ }
  els.apikey.addEventListener("change", () => {
    try {
      if (els.apikey.value) localStorage.setItem(KEY_STORE, els.apikey.value);
      else localStorage.removeItem(KEY_STORE);
    } catch (_) { /* ignore */ }
  });

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    const key = els.apikey.value.trim();
    if (key) h.Authorization = "Bearer " + key;
    return h;
  }

  // ---- errors -------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, message, type, code) {
      super(message);
      this.status = status; this.type = type; this.code = code;
    }
  }

  const STATUS_HINTS = {
    401: "The server needs an API key: open \u201cAPI key\u201d and enter it.",
    403: "The API key was refused.",
    413: "The file is too large for this server.",
    415: "This file type is not supported: choose a video (mp4, webm, mov...).",
    422: "The clip could not be analysed.",
    429: "The server is busy: wait a moment and try again.",
    503: "The server is not ready (still loading?): try again shortly.",
  };

  async function apiError(resp) {
    let message = "", type = "", code = "";
    const text = await resp.text().catch(() => "");
    try {
      const body = JSON.parse(text);
      const err = body && body.error;
      if (err && typeof err === "object") {
        message = err.message || ""; type = err.type || ""; code = err.code || "";
      } else if (typeof err === "string") {
        message = err;
      } else if (body && body.detail) {
        message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      }
    } catch (_) {
      message = text.slice(0, 300);
    }
    return new ApiError(resp.status, message || resp.statusText || "request failed", type, code);
  }

  function showError(err) {
    els.error.replaceChildren();
    const title = document.createElement("strong");
    if (err instanceof ApiError) {
      const status = err.status ? `Error ${err.status}` : "Error";
      title.textContent = `${status}${err.code ? " (" + err.code + ")" : ""}: ${err.message}`;
      els.error.append(title);
      const hint = STATUS_HINTS[err.status] || (err.code === "queue_full" ? STATUS_HINTS[429] : "");
      if (hint) els.error.append(document.createTextNode(hint));
    } else if (err instanceof TypeError) {
      title.textContent = "Network error: the server could not be reached.";
      els.error.append(title, document.createTextNode(String(err.message || "")));
    } else {
      title.textContent = "Error: " + (err && err.message ? err.message : String(err));
      els.error.append(title);
    }
    els.error.hidden = false;
  }

  function clearError() { els.error.hidden = true; els.error.replaceChildren(); }

  // ---- progress -----------------------------------------------------------------------------------
  function progress(text, fraction) {
    els.progress.hidden = false;
    els.progressText.textContent = text;
    if (fraction == null) els.progressBar.removeAttribute("value");
    else { els.progressBar.max = 1; els.progressBar.value = fraction; }
  }
  function progressDone() { els.progress.hidden = true; }

  // ---- recording from the camera ------------------------------------------------------------------
  const canRecord = !!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia &&
    window.MediaRecorder && window.isSecureContext);
  if (canRecord) els.recordBox.hidden = false;

  let recorder = null, stream = null, chunks = [], recordedUrl = null;

  function pickMime() {
    const types = ["video/webm;codecs=vp9,opus", "video/webm;codecs=vp8,opus", "video/webm"];
    for (const t of types) if (MediaRecorder.isTypeSupported && MediaRecorder.isTypeSupported(t)) return t;
    return "";
  }

  function stopCamera() {
    if (stream) stream.getTracks().forEach((t) => t.stop());
    stream = null;
    els.preview.srcObject = null;
    els.preview.hidden = true;
  }

  els.record.addEventListener("click", async () => {
    clearError();
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    } catch (err) {
      showError(new Error("The camera could not be opened (" + (err.name || err.message) + ")."));
      return;
    }
    els.preview.removeAttribute("src");
    els.preview.controls = false;
    els.preview.muted = true;
    els.preview.setAttribute("aria-label", "Camera preview");
    els.preview.srcObject = stream;
    els.preview.hidden = false;
    els.preview.play().catch(() => {});
    const mime = pickMime();
    try {
      recorder = new MediaRecorder(stream, mime ? { mimeType: mime } : undefined);
    } catch (err) {
      stopCamera();
      showError(new Error("This browser cannot record video (" + (err.name || err.message) + ")."));
      return;
    }
    chunks = [];
    recorder.ondataavailable = (e) => { if (e.data && e.data.size) chunks.push(e.data); };
    recorder.onstop = () => {
      recorded = new Blob(chunks, { type: recorder.mimeType || "video/webm" });
      els.file.value = "";
      els.recordStatus.textContent =
        `Recorded ${(recorded.size / 1e6).toFixed(1)} MB: it will be analysed on submit.`;
      stopCamera();
      // play the recording back in the preview
      if (recordedUrl) URL.revokeObjectURL(recordedUrl);
      recordedUrl = URL.createObjectURL(recorded);
      els.preview.src = recordedUrl;
      els.preview.muted = false;
      els.preview.controls = true;
      els.preview.setAttribute("aria-label", "The recorded clip");
      els.preview.hidden = false;
      els.record.hidden = false; els.record.textContent = "Record again";
      els.recordStop.hidden = true;
    };
    recorder.start();
    els.record.hidden = true;
    els.recordStop.hidden = false;
    els.recordStop.focus();
    els.recordStatus.textContent = "Recording\u2026";
  });
  els.recordStop.addEventListener("click", () => {
    if (recorder && recorder.state !== "inactive") recorder.stop();
  });
  els.file.addEventListener("change", () => {
    if (els.file.files.length && recorded) {
      recorded = null;
      els.recordStatus.textContent = "";
      els.preview.hidden = true;
      els.preview.removeAttribute("src");
      els.record.textContent = "Start camera";
    }
  });

  function chosenClip() {
    if (els.file.files.length) return { blob: els.file.files[0], name: els.file.files[0].name };
    if (recorded) return { blob: recorded, name: "recording.webm" };
    return null;
  }

  // ---- API calls ----------------------------------------------------------------------------------
  // The upload with XMLHttpRequest: fetch cannot report upload progress.
  function uploadFile(clip) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/v1/files");
      const h = headers();
      for (const k in h) xhr.setRequestHeader(k, h[k]);
      xhr.upload.onprogress = (e) => {
        if (e.lengthComputable) progress(`Uploading ${clip.name}\u2026`, e.loaded / e.total);
      };
      xhr.onload = async () => {
        const resp = new Response(xhr.responseText, { status: xhr.status, statusText: xhr.statusText });
        if (xhr.status >= 200 && xhr.status < 300) {
          try { resolve(await resp.json()); } catch (err) { reject(err); }
        } else {
          reject(await apiError(resp));
        }
      };
      xhr.onerror = () => reject(new TypeError("upload failed"));
      const form = new FormData();
      form.append("file", clip.blob, clip.name);
      form.append("purpose", "user_data");
      xhr.send(form);
    });
  }

  async function analyze(clip, subtitle, question) {
    const form = new FormData();
    form.append("file", clip.blob, clip.name);
    if (subtitle) form.append("subtitle", subtitle);
    if (question) form.append("question", question);
    const resp = await fetch("/v1/analyze", { method: "POST", body: form, headers: headers() });
    if (!resp.ok) throw await apiError(resp);
    return resp.json();
  }

  function deleteUpload(id) {
    fetch("/v1/files/" + encodeURIComponent(id), { method: "DELETE", headers: headers() }).catch(() => {});
  }

  // Server-sent events over fetch: events end at a blank line; each `data:` payload goes to onData.
  async function readSSE(resp, onData) {
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    const handle = (event) => {
      const data = event.split(/\r?\n/).filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
      if (!data) return true;
      if (data === "[DONE]") return false;
      onData(JSON.parse(data));
      return true;
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let m;
      while ((m = /\r?\n\r?\n/.exec(buf))) {
        const event = buf.slice(0, m.index);
        buf = buf.slice(m.index + m[0].length);
        if (!handle(event)) { reader.cancel().catch(() => {}); return; }
      }
    }
    if (buf.trim()) handle(buf);
  }

  // The chat stream: onLabel(label) once the "Emotion: LABEL" line is in, onText(reasoning so far)
  // for each piece, and the last chunk's `emotion` field returned.
  async function streamChat(videoUrl, subtitle, question, onLabel, onText) {
    const content = [];
    // No text part without a question: the server then answers with the label and its reasoning.
    if (question) content.push({ type: "text", text: question });
    content.push({ type: "video_url", video_url: { url: videoUrl } });
    const body = {
      model: "emotion-llama",
      stream: true,
      messages: [{ role: "user", content }],
      // Extensions of this server: the words spoken (instead of speech recognition), and a request
      // for the peak frame and the AU timeline in the last chunk (ignored where unsupported).
      emotion_details: true,
    };
    if (subtitle) body.subtitle = subtitle;
    const resp = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
      body: JSON.stringify(body),
    });
    if (!resp.ok) throw await apiError(resp);
    let raw = "", labelDone = false, emotion = null;
    await readSSE(resp, (chunk) => {
      if (chunk.error) {
        const e = chunk.error;
        throw new ApiError(0, e.message || "the stream failed", e.type, e.code);
      }
      if (chunk.emotion) emotion = chunk.emotion;
      for (const choice of chunk.choices || []) {
        const piece = choice.delta && choice.delta.content;
        if (!piece) continue;
        raw += piece;
        if (!labelDone) {
          const m = /^Emotion:[ \t]*([^\n]*)\n\n/.exec(raw);
          if (m) {
            labelDone = true;
            const label = m[1].trim();
            onLabel(label && label.toLowerCase() !== "unknown" ? label : null);
            raw = raw.slice(m[0].length);
          } else if (raw.length < 200 && "Emotion:".startsWith(raw.slice(0, 8))) {
            continue; // the label line is not complete yet
          } else {
            labelDone = true; // a server that does not send the label line
          }
        }
        onText(raw);
      }
    });
    return { emotion, text: raw.trim() };
  }

  // ---- rendering ----------------------------------------------------------------------------------
  function setText(el, value) {
    const empty = value == null || value === "" || (Array.isArray(value) && !value.length);
    el.textContent = empty ? "none" : Array.isArray(value) ? value.join(", ") : String(value);
    el.classList.toggle("none", empty);
  }

  function resetResults() {
    els.results.hidden = false;
    els.label.textContent = "\u2026";
    els.label.dataset.label = "";
    els.label.className = "label unknown";
    els.labelSource.textContent = "";
    els.scores.hidden = true; els.scores.replaceChildren();
    els.reasoning.textContent = "";
    els.reasoning.setAttribute("aria-busy", "true");
    els.reasoning.classList.remove("muted");
    els.reasoningTitle.textContent = els.question.value.trim() ? "Answer" : "Reasoning";
    els.peakFigure.hidden = true; els.peakNone.hidden = true;
    els.peakFrame.removeAttribute("src");
    els.auPng.hidden = true; els.auPng.removeAttribute("src");
    els.canvas.hidden = false; els.legend.replaceChildren(); els.timelineNone.hidden = true;
    const ctx = els.canvas.getContext("2d");
    ctx.clearRect(0, 0, els.canvas.width, els.canvas.height);
    lastTimeline = null; lastPeakTime = null;
    for (const el of [els.transcript, els.expression, els.aus, els.tone, els.candidates, els.timings,
                      els.votes, els.conflict, els.reasoningSource]) {
      el.textContent = "\u2026"; el.classList.remove("none");
    }
    els.missingBox.hidden = true; els.missing.replaceChildren();
  }

  function showLabel(label, source) {
    if (label) {
      els.label.textContent = label;
      els.label.dataset.label = label;
      els.label.className = "label";
    } else {
      els.label.textContent = "No label";
      els.label.dataset.label = "";
      els.label.className = "label unknown";
    }
    const sources = { au: "from the facial action units", llm: "named by the language model",
      user: "given by the user", model: "Emotion-LLaMA model" };
    els.labelSource.textContent = source ? (sources[source] || source) : "";
  }

  function showScores(scores) {
    els.scores.replaceChildren();
    if (!scores || typeof scores !== "object" || !Object.keys(scores).length) {
      els.scores.hidden = true; return;
    }
    const items = Object.entries(scores).sort((a, b) => b[1] - a[1]);
    const top = items[0][0];
    for (const [name, p] of items) {
      const row = document.createElement("div");
      row.className = "score" + (name === top ? " top" : "");
      const pct = Math.max(0, Math.min(1, Number(p))) * 100;
      row.innerHTML = '<span class="score-name"></span><span class="score-track" role="meter" ' +
        'aria-valuemin="0" aria-valuemax="100"><span class="score-fill"></span></span>' +
        '<span class="score-value"></span>';
      row.querySelector(".score-name").textContent = name;
      const track = row.querySelector(".score-track");
      track.setAttribute("aria-valuenow", pct.toFixed(1));
      track.setAttribute("aria-label", `${name}: ${pct.toFixed(1)}%`);
      row.querySelector(".score-fill").style.width = pct.toFixed(1) + "%";
      row.querySelector(".score-value").textContent = pct.toFixed(1) + "%";
      els.scores.append(row);
    }
    els.scores.hidden = false;
  }

  function showClues(result) {
    const c = result.clues || {};
    setText(els.transcript, c.subtitle ? `\u201c${c.subtitle}\u201d` : null);
    setText(els.expression, c.visual_expression);
    showAUs(c);
    setText(els.tone, c.audio_tone);
    const cands = (c.candidate_labels || []).map((x) =>
      typeof x === "string" ? x : `${x.label} (${Math.round(100 * (x.share || 0))}% of its AUs)`);
    setText(els.candidates, cands);
    // each modality's own vote (face, voice, words), whether they disagree, who wrote the reasoning
    const votes = Object.entries(c.modalities || {}).filter(([, v]) => v).map(([m, v]) =>
      v.label ? `${m}: ${v.label} (${Number(v.confidence || 0).toFixed(2)})`
        : (v.supports && v.supports.length ? `${m}: ${v.level} arousal` : `${m}: no vote`));
    setText(els.votes, votes);
    setText(els.conflict, c.conflict ? (c.conflict_reason || "yes") : (c.modalities ? "none" : null));
    const written = {llm: "the LLM (passed the faithfulness check)", "llm-retry": "the LLM, on its second try",
                     grounded: "the clues themselves (the LLM's answers named evidence the clip lacks)",
                     model: "the Emotion-LLaMA model"};
    setText(els.reasoningSource, c.reasoning_source ? (written[c.reasoning_source] || c.reasoning_source) : null);
    const t = result.timings_s || {};
    setText(els.timings, Object.keys(t).map((k) => `${k} ${Number(t[k]).toFixed(2)} s`));
    els.missing.replaceChildren();
    for (const m of c.missing || []) {
      const li = document.createElement("li"); li.textContent = m; els.missing.append(li);
    }
    els.missingBox.hidden = !(c.missing && c.missing.length);
  }

  // The AUs active at the peak, with their intensities when the clues have them.
  function showAUs(c) {
    const aus = c.peak_AU_list || [];
    const inten = c.au_intensities || {};
    setText(els.aus, aus.map((a) => {
      const name = AU_NAMES[a] ? `${a} ${AU_NAMES[a]}` : a;
      return inten[a] != null ? `${name} (${Number(inten[a]).toFixed(1)})` : name;
    }));
  }

  function showPeakFrame(result) {
    const c = result.clues || {};
    if (result.peak_frame_jpeg) {
      els.peakFrame.src = result.peak_frame_jpeg;
      els.peakCaption.textContent = c.peak_time_s != null
        ? `At ${Number(c.peak_time_s).toFixed(2)} s, where the action units are strongest.` : "";
      els.peakFigure.hidden = false; els.peakNone.hidden = true;
    } else {
      els.peakFigure.hidden = true; els.peakNone.hidden = false;
    }
  }

  // ---- the AU timeline on a canvas ----------------------------------------------------------------
  const PALETTE = ["#2f5bd3", "#d9480f", "#2b8a3e", "#ae3ec9", "#e67700", "#0b7285", "#c2255c",
    "#5c940d", "#364fc7", "#862e9c", "#a61e4d", "#1864ab"];
  const AU_MAX = 5;
  const ACTIVE = 1.0;

  // The AUs worth a line: those that are ever active, else the five strongest (as the PNG does).
  function pickAUs(tl) {
    const peaks = tl.names.map((_, k) => {
      let m = -Infinity;
      for (const row of tl.intensity) if (row[k] != null && row[k] > m) m = row[k];
      return m;
    });
    let keep = peaks.map((p, k) => k).filter((k) => peaks[k] >= ACTIVE);
    if (!keep.length) {
      keep = peaks.map((p, k) => k).filter((k) => isFinite(peaks[k]))
        .sort((a, b) => peaks[b] - peaks[a]).slice(0, 5);
    }
    return keep.sort((a, b) => peaks[b] - peaks[a]).slice(0, PALETTE.length);
  }

  function drawTimeline(tl, peakTime) {
    const canvas = els.canvas;
    const cssW = canvas.clientWidth || 600, cssH = canvas.clientHeight || 260;
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(cssW * dpr); canvas.height = Math.round(cssH * dpr);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, cssW, cssH);
    ctx.fillStyle = "#ffffff"; ctx.fillRect(0, 0, cssW, cssH);

    const pad = { l: 40, r: 12, t: 14, b: 30 };
    const w = cssW - pad.l - pad.r, h = cssH - pad.t - pad.b;
    const times = tl.times;
    const t0 = times[0], t1 = times[times.length - 1];
    const span = t1 > t0 ? t1 - t0 : 1;
    const x = (t) => pad.l + ((t - t0) / span) * w;
    const y = (v) => pad.t + h - (Math.max(0, Math.min(AU_MAX, v)) / AU_MAX) * h;

    // frames without a face, shaded
    ctx.fillStyle = "#e9ecef";
    (tl.face_found || []).forEach((found, i) => {
      if (found) return;
      const lo = i > 0 ? (times[i - 1] + times[i]) / 2 : times[i];
      const hi = i + 1 < times.length ? (times[i] + times[i + 1]) / 2 : times[i];
      ctx.fillRect(x(lo), pad.t, Math.max(2, x(hi) - x(lo)), h);
    });

    // axes and grid
    ctx.strokeStyle = "#d9dee4"; ctx.fillStyle = "#5b6673"; ctx.lineWidth = 1;
    ctx.font = "11px system-ui, sans-serif"; ctx.textAlign = "right"; ctx.textBaseline = "middle";
    for (let v = 0; v <= AU_MAX; v++) {
      ctx.beginPath(); ctx.moveTo(pad.l, y(v) + 0.5); ctx.lineTo(pad.l + w, y(v) + 0.5); ctx.stroke();
      ctx.fillText(String(v), pad.l - 6, y(v));
    }
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    const ticks = Math.max(2, Math.min(8, Math.floor(w / 70)));
    for (let i = 0; i <= ticks; i++) {
      const t = t0 + (span * i) / ticks;
      ctx.textAlign = i === 0 ? "left" : i === ticks ? "right" : "center";
      ctx.fillText(t.toFixed(1) + (i === ticks ? " s" : ""), x(t), pad.t + h + 6);
    }
    ctx.save();
    ctx.translate(10, pad.t + h / 2); ctx.rotate(-Math.PI / 2);
    ctx.textAlign = "center"; ctx.textBaseline = "middle";
    ctx.fillText("intensity", 0, 0);
    ctx.restore();

    // one line per AU (gaps where there is no value)
    const keep = pickAUs(tl);
    els.legend.replaceChildren();
    keep.forEach((k, j) => {
      const color = PALETTE[j % PALETTE.length];
      ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.lineJoin = "round";
      ctx.beginPath();
      let pen = false;
      tl.intensity.forEach((row, i) => {
        const v = row[k];
        if (v == null) { pen = false; return; }
        if (pen) ctx.lineTo(x(times[i]), y(v)); else { ctx.moveTo(x(times[i]), y(v)); pen = true; }
      });
      if (times.length === 1 && tl.intensity[0][k] != null) {
        ctx.arc(x(times[0]), y(tl.intensity[0][k]), 2, 0, 2 * Math.PI);
      }
      ctx.stroke();
      const li = document.createElement("li");
      const sw = document.createElement("span");
      sw.className = "swatch"; sw.style.background = color;
      const code = document.createElement("b");
      code.textContent = tl.names[k];
      li.append(sw, code);
      if (AU_NAMES[tl.names[k]]) li.append(document.createTextNode(AU_NAMES[tl.names[k]]));
      els.legend.append(li);
    });

    // the peak marker
    if (peakTime != null && isFinite(peakTime)) {
      const px = Math.round(x(peakTime)) + 0.5;
      ctx.strokeStyle = "#1d232b"; ctx.lineWidth = 1; ctx.setLineDash([5, 4]);
      ctx.beginPath(); ctx.moveTo(px, pad.t); ctx.lineTo(px, pad.t + h); ctx.stroke();
      ctx.setLineDash([]);
      ctx.fillStyle = "#1d232b"; ctx.textBaseline = "top";
      const label = `peak ${Number(peakTime).toFixed(2)} s`;
      ctx.textAlign = px > pad.l + w - 80 ? "right" : "left";
      ctx.fillText(label, px + (ctx.textAlign === "left" ? 4 : -4), pad.t + 2);
    }
    els.canvas.setAttribute("aria-label",
      `Action unit intensities (0 to 5) over ${span.toFixed(1)} s` +
      (peakTime != null ? `, peak at ${Number(peakTime).toFixed(2)} s` : "") +
      (keep.length ? `; lines: ${keep.map((k) => tl.names[k]).join(", ")}` : ""));
    els.canvas.dataset.drawn = "1";
  }

  function showTimeline(result) {
    const tl = result.au_timeline;
    const peakTime = result.clues ? result.clues.peak_time_s : null;
    const usable = tl && Array.isArray(tl.times) && tl.times.length && Array.isArray(tl.intensity);
    const noFace = usable && Array.isArray(tl.face_found) && !tl.face_found.some(Boolean);
    const canvasOk = !!(els.canvas.getContext && els.canvas.getContext("2d"));
    if (noFace || (!usable && !result.au_timeline_png)) {
      els.canvas.hidden = true; els.legend.replaceChildren(); els.timelineNone.hidden = false;
    } else if (usable && canvasOk) {
      els.canvas.hidden = false; els.auPng.hidden = true; els.timelineNone.hidden = true;
      lastTimeline = tl; lastPeakTime = peakTime;
      drawTimeline(tl, peakTime);
    } else {
      // no canvas (or no timeline data): the server's PNG
      els.canvas.hidden = true; els.legend.replaceChildren();
      els.auPng.src = result.au_timeline_png; els.auPng.hidden = false;
    }
  }

  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (lastTimeline) drawTimeline(lastTimeline, lastPeakTime); }, 150);
  });

  // ---- submit -------------------------------------------------------------------------------------
  els.form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearError();
    const clip = chosenClip();
    if (!clip) {
      showError(new Error("Choose a video file (or record one) first."));
      els.file.focus();
      return;
    }
    const subtitle = els.subtitle.value.trim();
    const question = els.question.value.trim();
    els.submit.disabled = true;
    els.results.hidden = true;
    // The page's state, for scripts and tests: running, then done or error.
    document.body.dataset.state = "running";
    try {
      await run(clip, subtitle, question);
      document.body.dataset.state = "done";
    } catch (err) {
      document.body.dataset.state = "error";
      showError(err);
      els.reasoning.setAttribute("aria-busy", "false");
      if (!els.label.dataset.label) els.results.hidden = true;
    } finally {
      progressDone();
      els.submit.disabled = false;
    }
  });

  const NO_REASONING = /^\(no reasoning[^)]*\)$/;

  async function run(clip, subtitle, question) {
    progress(`Uploading ${clip.name}\u2026`, 0);
    const uploaded = await uploadFile(clip);
    resetResults();
    progress("Analysing the clip: face, voice and speech\u2026", null);
    let labelShown = false;
    let streamed;
    try {
      streamed = await streamChat(
        uploaded.url || "upload://" + uploaded.id, subtitle, question,
        (label) => {
          showLabel(label, null);
          labelShown = true;
          progress(question ? "Answering the question\u2026" : "Writing the reasoning\u2026", null);
        },
        (text) => { els.reasoning.textContent = text; },
      );
    } finally {
      deleteUpload(uploaded.id);
    }
    const em = streamed.emotion || {};
    els.reasoning.setAttribute("aria-busy", "false");
    els.reasoning.classList.toggle("muted", NO_REASONING.test(streamed.text));
    if (em.label !== undefined || !labelShown) {
      showLabel(em.label !== undefined ? em.label : null, em.clues && em.clues.label_source);
    }
    showScores(em.scores);
    if (em.clues) showClues(em);
    if (em.peak_frame_jpeg !== undefined || em.au_timeline !== undefined) {
      showPeakFrame(em);
      showTimeline(em);
      return;
    }
    // This server does not put the images in the stream: ask /v1/analyze for them.
    progress("Drawing the peak frame and the action units\u2026", null);
    const result = await analyze(clip, subtitle, null);
    if (!em.clues) showClues(result);
    else showAUs(result.clues || {});
    showPeakFrame(result);
    showTimeline(result);
    if (!labelShown && em.label === undefined) showLabel(result.label, result.clues && result.clues.label_source);
  }
})();
