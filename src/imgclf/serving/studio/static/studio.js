// imgclf studio: classes and images of a project, through the Studio's JSON API.
// Every name from the server is put on the page as text (textContent), never as HTML.
"use strict";

const PAGE = 100;
const $ = (id) => document.getElementById(id);
const state = { project: null, current: null, offset: 0, total: 0 };

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

const classPath = (name) => `/v1/classes/${encodeURIComponent(name)}`;
const imagePath = (name, image) => `${classPath(name)}/images/${encodeURIComponent(image)}`;

function element(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

// The doctor reads every image: by itself only while that takes a moment, else on request.
const AUTO_DOCTOR_IMAGES = 2000;

async function loadProject() {
  state.project = await api("GET", "/v1/project");
  $("project").textContent = `${state.project.path} — images in data/<class>/`;
  renderClasses(state.project.classes);
  const images = state.project.classes.reduce((n, c) => n + c.images, 0);
  if (images && images <= AUTO_DOCTOR_IMAGES) runDoctor().catch(() => {});
}

async function runDoctor() {
  $("doctor").replaceChildren(element("li", { textContent: "checking…" }));
  const report = await api("GET", "/v1/doctor");
  const items = report.problems.map((p) => element("li", { className: p.severity, textContent: `${p.severity}: ${p.message}` }));
  $("doctor").replaceChildren(...(items.length ? items : [element("li", { textContent: report.note || "no problems found" })]));
}

function renderClasses(classes) {
  state.project.classes = classes;
  const list = $("classes");
  list.replaceChildren();
  classes.forEach((c, i) => {
    const pick = element("button", { type: "button", className: "pick", textContent: `${c.name} (${c.images})` });
    pick.setAttribute("aria-current", String(c.name === state.current));
    pick.addEventListener("click", () => openClass(c.name));
    const up = element("button", { type: "button", className: "move", textContent: "↑", disabled: i === 0 });
    up.setAttribute("aria-label", `move ${c.name} up`);
    up.addEventListener("click", () => reorder(i, i - 1));
    const down = element("button", { type: "button", className: "move", textContent: "↓", disabled: i === classes.length - 1 });
    down.setAttribute("aria-label", `move ${c.name} down`);
    down.addEventListener("click", () => reorder(i, i + 1));
    list.append(element("li", {}, pick, up, down));
  });
  if (state.current && !classes.some((c) => c.name === state.current)) {
    state.current = null;
    $("class-view").hidden = true;
  }
}

async function reorder(from, to) {
  const names = state.project.classes.map((c) => c.name);
  names.splice(to, 0, names.splice(from, 1)[0]);
  renderClasses((await api("PUT", "/v1/order", { order: names })).classes);
}

async function openClass(name, offset = 0) {
  state.current = name;
  state.offset = offset;
  $("class-view").hidden = false;
  $("class-title").textContent = name;
  renderClasses(state.project.classes);
  const page = await api("GET", `${classPath(name)}/images?offset=${offset}&limit=${PAGE}`);
  state.total = page.total;
  const last = Math.min(offset + PAGE, page.total);
  $("page-info").textContent = page.total ? `${offset + 1}–${last} of ${page.total}` : "no images yet";
  $("prev-page").disabled = offset === 0;
  $("next-page").disabled = last >= page.total;
  $("images").replaceChildren(...page.images.map((image) => thumbnail(name, image)));
}

function thumbnail(name, image) {
  const img = element("img", { alt: image.name, loading: "lazy", src: `${imagePath(name, image.name)}/thumb?v=${image.modified}` });
  const link = element("a", { href: imagePath(name, image.name), target: "_blank", rel: "noopener" }, img);
  const move = element("select");
  move.setAttribute("aria-label", `move ${image.name} to another class`);
  move.append(element("option", { value: "", textContent: "move to…" }));
  for (const c of state.project.classes) if (c.name !== name) move.append(element("option", { value: c.name, textContent: c.name }));
  move.addEventListener("change", async () => {
    if (!move.value) return;
    renderClasses((await api("POST", `${imagePath(name, image.name)}/move`, { to: move.value })).classes);
    openClass(name, state.offset);
  });
  const remove = element("button", { type: "button", className: "danger", textContent: "Delete" });
  remove.setAttribute("aria-label", `delete ${image.name}`);
  remove.addEventListener("click", async () => {
    renderClasses((await api("DELETE", imagePath(name, image.name))).classes);
    openClass(name, state.offset);
  });
  return element("li", {}, link, element("p", { className: "name", title: image.name, textContent: image.name }),
    element("div", { className: "row" }, move, remove));
}

// --- uploads: files, folders (dropped or picked) and pasted images, in batches ---------

async function filesOfEntry(entry) {
  if (entry.isFile) return [await new Promise((ok, fail) => entry.file(ok, fail))];
  if (!entry.isDirectory) return [];
  const reader = entry.createReader();
  const out = [];
  for (;;) {
    const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
    if (!batch.length) return out;
    for (const child of batch) if (!child.name.startsWith(".")) out.push(...(await filesOfEntry(child)));
  }
}

async function droppedFiles(transfer) {
  const entries = [...transfer.items].map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry()).filter(Boolean);
  if (!entries.length) return [...transfer.files];
  const out = [];
  for (const entry of entries) out.push(...(await filesOfEntry(entry)));
  return out;
}

async function upload(files) {
  if (!state.current || !files.length) return;
  const { max_files: maxFiles, max_upload_bytes: maxBytes } = state.project.limits;
  const refused = [];
  let added = 0;
  let batch = [];
  let bytes = 0;
  const send = async () => {
    if (!batch.length) return;
    const form = new FormData();
    for (const f of batch) form.append("file", f, f.webkitRelativePath || f.name);
    try {
      const answer = await api("POST", `${classPath(state.current)}/images`, form);
      added += answer.added.length;
      refused.push(...answer.refused);
      renderClasses(answer.classes);
    } catch (error) {
      refused.push(...batch.map((f) => ({ filename: f.name, reason: error.message })));
    }
    batch = [];
    bytes = 0;
    $("upload-status").textContent = `added ${added} of ${files.length}…`;
  };
  for (const file of files) {
    if (file.size > maxBytes) {
      refused.push({ filename: file.name, reason: `larger than ${maxBytes} bytes` });
      continue;
    }
    if (batch.length >= maxFiles || bytes + file.size > maxBytes) await send();
    batch.push(file);
    bytes += file.size;
  }
  await send();
  $("upload-status").textContent = `added ${added} image(s)` + (refused.length ? `, refused ${refused.length}` : "");
  $("refused-box").hidden = !refused.length;
  $("refused-title").textContent = `${refused.length} file(s) not added`;
  $("refused").replaceChildren(...refused.map((r) => element("li", { textContent: `${r.filename}: ${r.reason}` })));
  openClass(state.current, state.offset);
  const images = state.project.classes.reduce((n, c) => n + c.images, 0);
  if (images <= AUTO_DOCTOR_IMAGES) runDoctor().catch(() => {});
}

// --- webcam collection: frames while the button is held, four a second ------------------

const recording = { stream: null, timer: null, added: 0, pending: 0, wanted: false };

async function startRecording() {
  if (recording.timer || recording.wanted || !state.current) return;
  recording.wanted = true;
  const name = state.current;
  const stream = await navigator.mediaDevices.getUserMedia({ video: true });
  if (!recording.wanted) {  // released before the camera answered
    stream.getTracks().forEach((t) => t.stop());
    return;
  }
  recording.stream = stream;
  const video = $("record-video");
  video.srcObject = recording.stream;
  video.hidden = false;
  $("record-button").setAttribute("aria-pressed", "true");
  recording.added = 0;
  const canvas = document.createElement("canvas");
  let n = 0;
  recording.timer = setInterval(() => {
    if (!video.videoWidth || recording.pending > 4) return;  // the server keeps up, or frames wait
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    n += 1;
    const frameName = `webcam-${Date.now()}-${n}.jpg`;
    recording.pending += 1;
    canvas.toBlob(async (blob) => {
      const form = new FormData();
      form.append("file", blob, frameName);
      try {
        const answer = await api("POST", `${classPath(name)}/images`, form);
        recording.added += answer.added.length;
        $("record-count").textContent = `${recording.added} frame(s) added to ${name}`;
        renderClasses(answer.classes);
      } finally {
        recording.pending -= 1;
      }
    }, "image/jpeg", 0.9);
  }, 250);
}

function stopRecording() {
  recording.wanted = false;
  if (!recording.timer) return;
  clearInterval(recording.timer);
  recording.timer = null;
  $("record-button").setAttribute("aria-pressed", "false");
  const stream = recording.stream;
  recording.stream = null;
  setTimeout(() => {  // the last frames are on their way; then the camera is let go
    stream.getTracks().forEach((t) => t.stop());
    $("record-video").hidden = true;
    if (state.current) openClass(state.current, state.offset);
    const images = state.project.classes.reduce((n, c) => n + c.images, 0);
    if (images <= AUTO_DOCTOR_IMAGES) runDoctor().catch(() => {});
  }, 500);
}

function setUpRecording() {
  const button = $("record-button");
  if (!window.isSecureContext || !navigator.mediaDevices) {
    button.hidden = true;
    $("record-help").textContent = "Recording needs the page on localhost or HTTPS.";
    return;
  }
  const start = () => startRecording().catch((error) => { $("record-count").textContent = error.message; });
  button.addEventListener("pointerdown", start);
  for (const type of ["pointerup", "pointerleave", "pointercancel", "blur"]) button.addEventListener(type, stopRecording);
  button.addEventListener("keydown", (event) => {
    if ((event.key === " " || event.key === "Enter") && !event.repeat) { event.preventDefault(); start(); }
  });
  button.addEventListener("keyup", (event) => { if (event.key === " " || event.key === "Enter") stopRecording(); });
}

function setUpUploads() {
  setUpRecording();
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    upload(await droppedFiles(event.dataTransfer));
  });
  for (const id of ["file-input", "folder-input"]) {
    $(id).addEventListener("change", (event) => { upload([...event.target.files]); event.target.value = ""; });
  }
  document.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData?.files || [])];
    if (files.length) upload(files);
  });
}

// --- classes and the doctor ----------------------------------------------------------

function setUpClasses() {
  $("new-class").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = $("new-class-name").value;
    try {
      renderClasses((await api("POST", "/v1/classes", { name })).classes);
      $("new-class-name").value = "";
      $("class-error").textContent = "";
      openClass(name);
    } catch (error) {
      $("class-error").textContent = error.message;
    }
  });
  $("rename-class").addEventListener("click", async () => {
    const name = window.prompt(`Rename class ${state.current} to:`, state.current);
    if (!name || name === state.current) return;
    try {
      renderClasses((await api("PATCH", classPath(state.current), { name })).classes);
      openClass(name);
    } catch (error) {
      $("class-error").textContent = error.message;
    }
  });
  $("delete-class").addEventListener("click", async () => {
    if (!window.confirm(`Delete class ${state.current} and its images? (They go to the project's .trash folder.)`)) return;
    renderClasses((await api("DELETE", classPath(state.current))).classes);
  });
  $("prev-page").addEventListener("click", () => openClass(state.current, Math.max(0, state.offset - PAGE)));
  $("next-page").addEventListener("click", () => openClass(state.current, state.offset + PAGE));
  $("run-doctor").addEventListener("click", () => runDoctor().catch((error) => {
    $("doctor").replaceChildren(element("li", { textContent: error.message }));
  }));
}

// --- training: start, follow (server-sent events), cancel; a reload reattaches ------------

const job = { events: 0, stream: null, epochs: [], task: null, started: 0 };

async function setUpTraining() {
  const options = await api("GET", "/v1/options");
  $("preset").replaceChildren(...options.presets.map((p) => element("option", { value: p, textContent: p })));
  for (const [id, values] of [["backbone", options.backbones], ["fine_tune", options.fine_tune], ["augment", options.augment]]) {
    $(id).append(...values.map((v) => element("option", { value: v, textContent: v })));
  }
  $("train-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {};
    for (const id of ["preset", "backbone", "fine_tune", "augment"]) if ($(id).value) body[id] = $(id).value;
    if ($("epochs").value) body.epochs = Number($("epochs").value);
    try {
      await api("POST", "/v1/jobs", body);
      resetJob();
      follow(0);
    } catch (error) {
      $("train-status").textContent = error.message;
    }
  });
  $("cancel-button").addEventListener("click", async () => {
    try { await api("POST", "/v1/jobs/current/cancel"); } catch (error) { $("train-status").textContent = error.message; }
  });
  const current = await api("GET", "/v1/jobs/current");
  if (!current.job) return;
  resetJob();
  current.events.forEach(showEvent);
  job.events = current.events.length;
  if (current.job.state === "running") follow(job.events);
}

function resetJob() {
  Object.assign(job, { events: 0, epochs: [], task: null, started: performance.now() });
  $("train-result").hidden = true;
  $("train-progress").hidden = false;
  $("curves").hidden = false;
  setRunning(true);
  drawCurves();
}

function setRunning(running) {
  $("train-button").disabled = running;
  $("cancel-button").hidden = !running;
}

function follow(after) {
  if (job.stream) job.stream.close();
  job.stream = new EventSource(`/v1/jobs/current/events?after=${after}`);
  job.stream.onmessage = (message) => {
    job.events += 1;
    const event = JSON.parse(message.data);
    showEvent(event);
    if (event.event === "end") job.stream.close();
  };
  job.stream.onerror = () => {
    job.stream.close();
    setTimeout(() => api("GET", "/v1/jobs/current").then((c) => c.job && c.job.state === "running" && follow(job.events)), 2000);
  };
}

function showEvent(event) {
  const status = $("train-status");
  if (event.event === "progress") {
    if (job.task !== event.task) Object.assign(job, { task: event.task, taskStarted: performance.now() });
    const rate = event.done / Math.max(0.001, (performance.now() - job.taskStarted) / 1000);
    status.textContent = `${event.task}: ${event.done} of ${event.total}` + (event.done ? ` (${rate.toFixed(0)} per second)` : "");
    $("train-progress").max = event.total || 1;
    $("train-progress").value = event.done;
  } else if (event.event === "epoch") {
    job.epochs.push(event);
    const logs = event.logs;
    status.textContent = `${event.stage === "head" ? "head" : "fine-tuning"} epoch ${event.epoch}: ` +
      `accuracy ${(logs.accuracy ?? 0).toFixed(3)}` + (logs.val_accuracy !== undefined ? `, validation ${logs.val_accuracy.toFixed(3)}` : "");
    drawCurves();
  } else if (event.event === "info" || event.event === "warning" || event.event === "error" || event.event === "log") {
    if (event.event !== "log") status.textContent = (event.event === "info" ? "" : `${event.event}: `) + event.message;
  } else if (event.event === "end") {
    setRunning(false);
    $("train-progress").hidden = true;
    if (event.state === "finished" && event.export) { $("train-status").textContent = "exported"; showVariants(event.export); loadRuns(); }
    else if (event.state === "finished") { showResult(event.metrics); loadRuns(); }
    else status.textContent = event.state === "cancelled" ? "cancelled: the finished epochs are kept" : `failed: ${status.textContent}`;
    loadProject();
  }
}

function showResult(metrics) {
  const split = metrics.test ? "test" : "val";
  const m = metrics[split];
  const cached = metrics.images_from_cache ? `, ${metrics.images_from_cache} from the cache` : "";
  $("train-status").textContent = `done in ${Math.round(metrics.seconds || 0)} s: ${metrics.images_embedded} images embedded${cached}`;
  $("accuracy").textContent = m ? `${split === "test" ? "Test" : "Validation"} accuracy: ${(100 * m.accuracy).toFixed(1)} % on ${m.n} images` : "no validation images";
  const rows = m ? Object.entries(m.per_class).map(([name, c]) => element("tr", {},
    element("td", { textContent: name }), element("td", { textContent: `${(100 * c.recall).toFixed(0)} %` }),
    element("td", { textContent: `${(100 * c.precision).toFixed(0)} %` }), element("td", { textContent: String(c.support) }))) : [];
  $("per-class").tBodies[0].replaceChildren(...rows);
  showConfusion(m ? Object.keys(m.per_class) : [], m ? m.confusion_matrix : []);
  api("GET", "/v1/runs").then((r) => {
    if (!r.runs.length) return;
    $("report-link").href = `/runs/${encodeURIComponent(r.runs[0].run)}/report.html`;
    showMistakes(r.runs[0].run);
  });
  $("train-result").hidden = false;
}

function showConfusion(classes, matrix) {
  $("confusion").hidden = !classes.length;
  $("confusion").tHead.replaceChildren(element("tr", {}, element("th", { textContent: "" }),
    ...classes.map((c) => element("th", { scope: "col", textContent: c }))));
  $("confusion").tBodies[0].replaceChildren(...matrix.map((row, i) => element("tr", {},
    element("th", { scope: "row", textContent: classes[i] }),
    ...row.map((n, j) => element("td", { className: n ? (i === j ? "right" : "wrong") : "", textContent: String(n) })))));
}

async function showMistakes(run) {
  const shown = await api("GET", `/v1/runs/${encodeURIComponent(run)}/mistakes`);
  $("pairs").replaceChildren(...shown.pairs.map((p) => element("li", { textContent: `${p.true} taken for ${p.pred}: ${p.count} image(s)` })));
  const tiles = shown.high_loss.map((m) => {
    const tile = element("li");
    const img = element("img", { alt: `${m.image}, labelled ${m.true}`, loading: "lazy", src: `${imagePath(m.class, m.image)}/thumb` });
    const relabel = element("button", { type: "button", className: "secondary", textContent: `It is a ${m.pred}` });
    relabel.addEventListener("click", async () => {
      renderClasses((await api("POST", `${imagePath(m.class, m.image)}/move`, { to: m.pred })).classes);
      tile.replaceChildren(element("p", { className: "name", textContent: `${m.image}: moved to ${m.pred}` }));
    });
    const remove = element("button", { type: "button", className: "danger", textContent: "Delete" });
    remove.setAttribute("aria-label", `delete ${m.image}`);
    remove.addEventListener("click", async () => {
      renderClasses((await api("DELETE", imagePath(m.class, m.image))).classes);
      tile.replaceChildren(element("p", { className: "name", textContent: `${m.image}: deleted` }));
    });
    tile.append(element("a", { href: imagePath(m.class, m.image), target: "_blank", rel: "noopener" }, img),
      element("p", { className: "name", title: m.image, textContent: `${m.true} → ${m.pred} (${(100 * m.p_true).toFixed(0)} %)` }),
      element("div", { className: "row" }, relabel, remove));
    return tile;
  });
  $("mistakes").replaceChildren(...(tiles.length ? tiles : [element("li", { className: "small", textContent: "no mistakes on the validation images" })]));
}

function drawCurves() {
  // Drawn by hand on a canvas: a chart library would be a download, and this is two lines.
  const canvas = $("curves");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const head = job.epochs.filter((e) => e.stage === job.epochs.at(-1)?.stage);
  ctx.font = "12px system-ui";
  ctx.fillStyle = "#5f6b7a";
  ctx.fillText(head.length ? `${head[0].stage === "head" ? "head" : "fine-tuning"}: accuracy (blue), validation (green), loss (grey)` : "curves appear as epochs finish", 8, 14);
  if (head.length < 2) return;
  const maxLoss = Math.max(...head.map((e) => Math.max(e.logs.loss ?? 0, e.logs.val_loss ?? 0)), 1e-6);
  const series = [["accuracy", "#2364d2", 1], ["val_accuracy", "#1e8a3a", 1], ["loss", "#9aa3ad", maxLoss]];
  for (const [key, color, scale] of series) {
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    head.forEach((e, i) => {
      const v = e.logs[key];
      if (v === undefined || v === null) return;
      const x = 8 + (i / (head.length - 1)) * (canvas.width - 16);
      const y = canvas.height - 8 - (v / scale) * (canvas.height - 30);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

// --- try: an image (dropped, pasted, picked, or the webcam's frames) through a run's model ---

const trying = { threshold: 0, last: null, webcam: null, busy: false };

async function loadRuns() {
  const { runs } = await api("GET", "/v1/runs");
  const finished = runs.filter((r) => r.metrics && (r.metrics.val || r.metrics.test));
  $("try").hidden = !finished.length;
  const select = $("try-run");
  const chosen = select.value;
  select.replaceChildren(...finished.map((r) => element("option", { value: r.run, textContent: r.run })));
  if (finished.some((r) => r.run === chosen)) select.value = chosen;
  const run = finished.find((r) => r.run === select.value);
  if (run) {
    setThreshold(run.metrics.unknown_threshold ?? 0);
    showDownloads(run);
  }
}

function showDownloads(run) {
  const base = `/runs/${encodeURIComponent(run.run)}`;
  const links = run.files.map((f) => element("li", {}, element("a", {
    href: f.name === "web.zip" ? `${base}/web.zip` : `${base}/files/${f.name.split("/").map(encodeURIComponent).join("/")}`,
    textContent: f.name === "web.zip"
      ? `the web page (.zip, ${(f.bytes / 1e6).toFixed(1)} MB): unzip, run python -m http.server in it, open http://localhost:8000/`
      : `${f.name} (${(f.bytes / 1e6).toFixed(1)} MB)`,
  })));
  links.push(element("li", {}, element("a", { href: `${base}/run.zip`, textContent: "the whole run (.zip)" })));
  $("downloads").replaceChildren(...links);
  const exported = run.files.some((f) => f.name === "export/model_float32.tflite");
  $("snippets").hidden = !exported;
  $("export-button").textContent = exported ? "Export again" : "Export this run";
  const threshold = run.metrics.unknown_threshold;
  const unsure = threshold === null || threshold === undefined ? "" : `\n# "not sure" when the top score is below ${threshold.toFixed(3)}`;
  $("snippet-python").textContent = `import mediapipe as mp\n\nclassifier = mp.tasks.vision.ImageClassifier.create_from_model_path(\n    "${run.run}-model_float32.tflite")\nresult = classifier.classify(mp.Image.create_from_file("photo.jpg"))\nbest = result.classifications[0].categories[0]\nprint(best.category_name, best.score)${unsure}`;
  $("snippet-web").textContent = `import { FilesetResolver, ImageClassifier } from "@mediapipe/tasks-vision";\n\n// the package's wasm/ folder, served beside your page\nconst vision = await FilesetResolver.forVisionTasks("./wasm");\nconst classifier = await ImageClassifier.createFromModelPath(vision, "${run.run}-model_int8.tflite");\nconst best = classifier.classify(document.querySelector("img")).classifications[0].categories[0];\nconsole.log(best.categoryName, best.score);`;
  $("snippet-cli").textContent = `imgclf predict ${state.project.path}/runs/${run.run} photo.jpg`;
}

function showVariants(variants) {
  $("variants").hidden = !variants.length;
  $("variants").tBodies[0].replaceChildren(...variants.map((v) => element("tr", {},
    element("td", { textContent: v.name }), element("td", { textContent: `${(v.bytes / 1e6).toFixed(2)} MB` }),
    element("td", { textContent: v.agreement === null || v.agreement === undefined ? "—" : `${(100 * v.agreement).toFixed(1)} %` }),
    element("td", { textContent: v.accuracy === null || v.accuracy === undefined ? "—" : `${(100 * v.accuracy).toFixed(1)} %` }))));
}

function setThreshold(value) {
  trying.threshold = value;
  $("threshold").value = String(Math.round(100 * value));
  $("threshold-value").textContent = `${Math.round(100 * value)} %`;
  if (trying.last) showAnswer(trying.last);
}

async function tryImage(blob) {
  const form = new FormData();
  form.append("file", blob, blob.name || "image.jpg");
  const answer = await api("POST", `/v1/runs/${encodeURIComponent($("try-run").value)}/predict`, form);
  trying.last = answer;
  showAnswer(answer);
}

function showAnswer(answer) {
  const best = answer.predictions[0];
  const sure = best.score >= trying.threshold;
  $("try-answer").textContent = sure ? `${best.label} (${(100 * best.score).toFixed(0)} %)`
    : `not sure (best guess: ${best.label}, ${(100 * best.score).toFixed(0)} %)`;
  $("try-answer").dataset.label = sure ? best.label : "";
  $("try-bars").replaceChildren(...answer.predictions.map((p) => {
    const bar = element("span");
    bar.style.width = `${(100 * p.score).toFixed(1)}%`;
    const row = element("li", {}, element("span", { textContent: p.label }), element("span", { className: "bar" }, bar),
      element("span", { textContent: `${(100 * p.score).toFixed(1)} %` }));
    row.dataset.label = p.label;
    return row;
  }));
}

async function toggleWebcam() {
  const video = $("webcam");
  if (trying.webcam) {
    clearInterval(trying.webcam.timer);
    trying.webcam.stream.getTracks().forEach((t) => t.stop());
    trying.webcam = null;
    video.hidden = true;
    $("webcam-button").textContent = "Start the webcam";
    return;
  }
  const stream = await navigator.mediaDevices.getUserMedia({ video: true });
  video.srcObject = stream;
  video.hidden = false;
  $("webcam-button").textContent = "Stop the webcam";
  const canvas = document.createElement("canvas");
  const timer = setInterval(() => {
    if (trying.busy || !video.videoWidth) return;
    trying.busy = true;
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    canvas.toBlob((blob) => tryImage(blob).catch(() => {}).finally(() => { trying.busy = false; }), "image/jpeg", 0.9);
  }, 400);
  trying.webcam = { stream, timer };
}

function setUpTry() {
  const zone = $("try-zone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) tryImage(event.dataTransfer.files[0]).catch(showTryError);
  });
  zone.addEventListener("paste", (event) => {
    event.stopPropagation();  // not an upload to the open class
    const file = event.clipboardData?.files?.[0];
    if (file) tryImage(file).catch(showTryError);
  });
  for (const id of ["try-input", "try-camera"]) {
    $(id).addEventListener("change", (event) => {
      if (event.target.files[0]) tryImage(event.target.files[0]).catch(showTryError);
      event.target.value = "";
    });
  }
  $("threshold").addEventListener("input", () => setThreshold(Number($("threshold").value) / 100));
  $("export-button").addEventListener("click", async () => {
    try {
      const started = await api("POST", `/v1/runs/${encodeURIComponent($("try-run").value)}/export`);
      resetJob();
      $("web-note").textContent = started.web_problem ? `No web page this time: ${started.web_problem}` : "";
      $("curves").hidden = true;  // no epochs in an export
      $("train-result").hidden = false;  // the accuracy stays shown while exporting
      follow(0);
    } catch (error) {
      $("train-status").textContent = error.message;
    }
  });
  $("try-run").addEventListener("change", () => loadRuns());
  if (!window.isSecureContext || !navigator.mediaDevices) {
    $("webcam-button").hidden = true;
    $("webcam-note").textContent = "The webcam needs the page on localhost or HTTPS; use Take a photo instead.";
  } else {
    $("webcam-button").addEventListener("click", () => toggleWebcam().catch(showTryError));
  }
}

function showTryError(error) {
  $("try-answer").textContent = error.message;
  $("try-answer").dataset.label = "";
}

setUpTry();
loadRuns().catch(() => {});
setUpClasses();
setUpUploads();
loadProject().catch((error) => { $("project").textContent = `cannot load the project: ${error.message}`; });
setUpTraining().catch((error) => { $("train-status").textContent = `training is not available: ${error.message}`; });
