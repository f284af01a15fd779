// The imgclf page: send one image to /v1/classify, show it with its top-k labels as bars.
// Plain DOM code, no build step and no other origin (the server's CSP forbids both).
"use strict";

const $ = (id) => document.getElementById(id);
let model = null;

function setState(state) {
  // Tests and styles key on this: loading | ready | busy | done | error.
  document.body.dataset.state = state;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  setState("error");
}

function percent(x) {
  return (100 * x).toFixed(1) + "%";
}

async function loadModel() {
  try {
    const response = await fetch("/v1/model");
    model = await response.json();
  } catch (err) {
    showError("Cannot reach the server: " + err);
    return;
  }
  const bits = [model.name, model.labels.length + " labels"];
  if (model.backbone) bits.push(model.backbone);
  bits.push(model.input_size + "×" + model.input_size + " px");
  const test = (model.metrics || {}).test || (model.metrics || {}).val;
  if (test && typeof test.accuracy === "number") {
    bits.push("accuracy " + percent(test.accuracy) + " on " + test.n + " held-out images");
  }
  $("model-summary").textContent = bits.join(" · ");
  $("model-details").textContent =
    "labels: " + model.labels.join(", ") + (model.version ? " · model version " + model.version : "");
  $("limits").textContent =
    "Up to " + (model.limits.max_upload_bytes / 1048576).toFixed(1) + " MB and " +
    (model.limits.max_pixels / 1e6).toFixed(0) + " megapixels. The image is only sent to this server.";
  setState("ready");
}

function renderPredictions(predictions) {
  const list = $("predictions");
  list.replaceChildren();
  for (const p of predictions) {
    const item = document.createElement("li");
    item.dataset.label = p.label;
    item.dataset.score = String(p.score);
    const row = document.createElement("div");
    row.className = "row";
    const name = document.createElement("span");
    name.textContent = p.label;
    const score = document.createElement("span");
    score.textContent = percent(p.score);
    row.append(name, score);
    const track = document.createElement("div");
    track.className = "track";
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = Math.max(0.5, 100 * p.score) + "%";
    track.append(fill);
    item.append(row, track);
    list.append(item);
  }
  const top = predictions[0];
  $("top-label").textContent = top.label;
  $("top-label").dataset.label = top.label;
}

async function classify(file) {
  if (!file) return;
  $("error").hidden = true;
  if (model && file.size > model.limits.max_upload_bytes) {
    showError(file.name + " is larger than the server's limit.");
    return;
  }
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  $("file-name").textContent = file.name || "pasted image";
  $("top-label").textContent = "…";
  $("top-label").dataset.label = "";
  $("predictions").replaceChildren();
  $("result").hidden = false;
  setState("busy");
  const topK = model ? Math.min(5, model.labels.length) : 3;
  try {
    const response = await fetch("/v1/classify?top_k=" + topK, {
      method: "POST",
      headers: { "Content-Type": file.type || "application/octet-stream" },
      body: file,
    });
    const answer = await response.json();
    if (!response.ok) {
      $("result").hidden = true;
      showError(answer.error || "The server answered " + response.status);
      return;
    }
    renderPredictions(answer.predictions);
    $("latency").textContent = "answered in " + answer.latency_ms + " ms by " + answer.model;
    setState("done");
  } catch (err) {
    showError("The request failed: " + err);
  }
}

function firstImage(items) {
  for (const item of items || []) {
    if (item.kind === "file" && item.type.startsWith("image/")) return item.getAsFile();
  }
  return null;
}

document.addEventListener("DOMContentLoaded", () => {
  const zone = $("drop-zone");
  for (const id of ["file-input", "camera-input"]) {
    $(id).addEventListener("change", (e) => {
      classify(e.target.files[0]);
      e.target.value = "";  // picking the same file again still fires "change"
    });
  }
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    classify(e.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (e) => {
    const file = firstImage(e.clipboardData && e.clipboardData.items);
    if (file) {
      e.preventDefault();
      classify(file);
    }
  });
  loadModel();
});
