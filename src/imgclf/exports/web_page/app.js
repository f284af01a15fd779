// The web export's page: the model's .tflite on LiteRT.js (WebAssembly, XNNPACK, one
// thread), fed pixels made the way imgclf makes them, so it answers as the model evaluated.
// Everything is loaded from this folder; see README.txt beside it.
import { loadLiteRt, loadAndCompile, Tensor } from './runtime/litertjs/core.js';
import { resizeBilinear } from './resize.js';

const $ = (id) => document.getElementById(id);
const say = (text) => { $('status').textContent = text; };
const params = new URLSearchParams(location.search);

const config = await (await fetch('model.json')).json();
const SIZE = config.input_size;
const LABELS = config.labels;

// Given the folder, LiteRT.js picks its relaxed-SIMD build or, on older browsers, the
// "compat" one. Without a `threads` option it needs no SharedArrayBuffer, so no COOP/COEP
// headers: any static server will do.
await loadLiteRt(new URL('runtime/litertjs/wasm/', location.href).href);

let current = null;                 // the model in use: { name, model, spec, inShape }
let queue = Promise.resolve();      // one run at a time: a model is not re-entrant
const serial = (task) => (queue = queue.then(task, task));

async function useModel(name) {
  const spec = config.models[name];
  if (!spec) throw new Error(`no model "${name}" in model.json`);
  const started = performance.now();
  // 'wasm' (XNNPACK on the CPU), never WebGPU: WebGPU kernels give other numbers than the
  // ones measured in the export's parity report.
  const model = await loadAndCompile(new URL(spec.file, location.href).href, { accelerator: 'wasm' });
  if (current) current.model.delete();
  const input = model.getInputDetails()[0], output = model.getOutputDetails()[0];
  current = { name, model, spec, inShape: Array.from(input.shape) };
  $('model').value = name;
  return { name, inDtype: input.dtype, outDtype: output.dtype, inShape: current.inShape,
           outShape: Array.from(output.shape), loadMs: performance.now() - started };
}

// Raw RGB pixels (SIZE x SIZE x 3, 0..255) -> probabilities. The model normalizes inside:
// a float model takes the pixel values as floats, an int8 one as uint8 (scale 1, zero 0).
async function run(pixels) {
  const { spec, model, inShape } = current;
  const input = new Tensor(spec.input_dtype === 'float32' ? Float32Array.from(pixels) : pixels, inShape);
  let outputs = [];
  try {
    outputs = await model.run(input);
    const raw = await outputs[0].data();
    if (spec.output_dtype === 'float32') return Array.from(raw);
    return Array.from(raw, (q) => spec.output_scale * (q - spec.output_zero_point));
  } finally {
    input.delete();
    for (const t of outputs) t.delete();
  }
}

function asPixels(pixels) {
  if (!(pixels instanceof Uint8Array)) pixels = Uint8Array.from(pixels);
  if (pixels.length !== SIZE * SIZE * 3) throw new Error(`expected ${SIZE * SIZE * 3} pixel values, got ${pixels.length}`);
  return pixels;
}

// What imgclf export's parity check calls through the page (and what an app may call).
window.classifyPixels = (pixels) => serial(() => run(asPixels(pixels)));
window.timeRuns = (pixels, runs) => serial(async () => {
  pixels = asPixels(pixels);
  for (let i = 0; i < 3; i++) await run(pixels);      // warm-up
  const ms = [];
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    await run(pixels);
    ms.push(performance.now() - started);
  }
  return ms;
});

// An image or video frame -> the model's pixels, as imgclf's decode_image makes them:
// transparency onto the training background, then Pillow's bilinear resize (resize.js) of
// the whole image ("squash") or of its centred square ("crop").
const canvas = $('canvas');
const view = canvas.getContext('2d');
const scratch = document.createElement('canvas').getContext('2d', { willReadFrequently: true });

function pixelsOf(source, width, height) {
  let box = [0, 0, width, height];
  if (config.resize === 'crop') {
    const side = Math.min(width, height), left = Math.floor((width - side) / 2), top = Math.floor((height - side) / 2);
    box = [left, top, left + side, top + side];
  }
  scratch.canvas.width = width;
  scratch.canvas.height = height;
  scratch.fillStyle = config.background;
  scratch.fillRect(0, 0, width, height);
  scratch.drawImage(source, 0, 0);  // at its own size: the canvas does no resampling
  const rgb = resizeBilinear(scratch.getImageData(0, 0, width, height).data, width, height, SIZE, box, 4, config.resize_order);
  const shown = new ImageData(SIZE, SIZE);
  for (let i = 0, j = 0; j < rgb.length; i += 4, j += 3) {
    shown.data.set([rgb[j], rgb[j + 1], rgb[j + 2], 255], i);
  }
  view.putImageData(shown, 0, 0);
  return rgb;
}

function show(probs, ms) {
  const order = probs.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]);
  const [best, index] = order[0];
  const sure = config.unknown_threshold == null || best >= config.unknown_threshold;
  $('top').textContent = `${sure ? LABELS[index] : 'not sure'} (${(100 * best).toFixed(1)} %, ${ms.toFixed(0)} ms)`;
  $('probs').replaceChildren(...order.slice(0, 5).map(([p, i]) => {
    const row = document.createElement('tr');
    const name = document.createElement('td'), score = document.createElement('td'), bar = document.createElement('td');
    const meter = document.createElement('meter');
    name.textContent = LABELS[i];  // text, never markup: a label is data
    score.textContent = `${(100 * p).toFixed(1)} %`;
    meter.value = p;
    bar.append(meter);
    row.append(name, score, bar);
    return row;
  }));
}

async function classifySource(source, width, height) {
  const started = performance.now();
  const probs = await window.classifyPixels(pixelsOf(source, width, height));
  show(probs, performance.now() - started);
  return probs;
}

// A file's own pixel values, EXIF orientation applied, as Pillow reads them.
async function classifyBlob(blob) {
  const bitmap = await createImageBitmap(blob, { imageOrientation: 'from-image', colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  try { return await classifySource(bitmap, bitmap.width, bitmap.height); } finally { bitmap.close(); }
}
window.classifyBlob = classifyBlob;

function fail(error) { console.error(error); say(`Error: ${error.message ?? error}`); }
const firstImage = (files) => [...files].find((f) => f.type.startsWith('image/'));

$('file').addEventListener('change', (e) => { const f = firstImage(e.target.files); if (f) classifyBlob(f).catch(fail); });
const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  const f = firstImage(e.dataTransfer.files);
  if (f) classifyBlob(f).catch(fail);
});
document.addEventListener('paste', (e) => { const f = firstImage(e.clipboardData.files); if (f) classifyBlob(f).catch(fail); });

// The webcam: browsers offer it only on https:// and http://localhost (a secure context).
const video = $('video');
let live = false;
if (!navigator.mediaDevices?.getUserMedia) {
  $('camStart').disabled = true;
  $('camNote').hidden = false;
}
$('camStart').addEventListener('click', async () => {
  try {
    video.srcObject = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment' }, audio: false });
    await video.play();
    $('camLive').disabled = false;
    await classifyFrame();
  } catch (error) { fail(error); }
});
const classifyFrame = () => classifySource(video, video.videoWidth, video.videoHeight);
window.classifyFrame = classifyFrame;
$('camLive').addEventListener('change', (e) => {
  live = e.target.checked;
  const loop = async () => { if (!live) return; await classifyFrame().catch(fail); requestAnimationFrame(loop); };
  loop();
});

for (const name of Object.keys(config.models)) $('model').add(new Option(name, name));
const ready = (info) => {
  say(`Ready: ${info.name} model, loaded in ${info.loadMs.toFixed(0)} ms. Runs here, in this browser: nothing is uploaded.`);
  return info;
};
$('model').addEventListener('change', (e) => serial(() => useModel(e.target.value)).then(ready).catch(fail));
window.ready = serial(() => useModel(params.get('model') || config.default)).then(ready);
window.ready.catch(fail);
