// The on-device recommender of a rectorch web bundle (written by `rectorch-export ... export/target=web`).
//
// Loads the bundle next to this page, checking every file against manifest.json (itself checked against
// manifest.sha256), keeps the user's history in localStorage, encodes it with onnxruntime-web (WebAssembly,
// one thread) and ranks every available item not in the history by inner product with the query, brute force.
// Nothing is sent anywhere: the only requests are for the bundle's own files.
//
// window.rectorch = {ready, recommend(history, k), history(), setHistory(ids)}; ready resolves to
// {numItems, dim, precision, vectors, runtime} once the model is loaded, recommend resolves to
// {items, scores, fallback, unknown, ms, query} (ms: performance.now() around encoding and ranking).

const MANIFEST = 'manifest.json';
const SIDECAR = 'manifest.sha256';
const ARRAYS = {
  int64: [BigInt64Array, (v) => BigInt(v)],
  int32: [Int32Array, Number],
  float32: [Float32Array, Number],
  float64: [Float64Array, Number],
  bool: [Uint8Array, Number],
};

async function fetchBytes(name) {
  const response = await fetch(name, { credentials: 'omit', referrerPolicy: 'no-referrer' });
  if (!response.ok) throw new Error(`${name}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

async function sha256(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

async function readManifest() {
  if (!globalThis.crypto || !crypto.subtle) {
    throw new Error('checking the bundle needs crypto.subtle: open the page over https or from localhost');
  }
  const [bytes, sidecar] = await Promise.all([fetchBytes(MANIFEST), fetchBytes(SIDECAR)]);
  const recorded = new TextDecoder().decode(sidecar).slice(0, 64);
  if ((await sha256(bytes)) !== recorded) throw new Error(`${MANIFEST} does not match ${SIDECAR}`);
  const manifest = JSON.parse(new TextDecoder().decode(bytes));
  if (manifest.format !== 'rectorch-web' || manifest.schema_version !== 1) {
    throw new Error(`${MANIFEST} is not a rectorch-web manifest of schema version 1`);
  }
  return manifest;
}

async function checkedFile(manifest, name) {
  const expected = manifest.files[name];
  if (!expected) throw new Error(`${name} is not listed in ${MANIFEST}`);
  const bytes = await fetchBytes(name);
  if ((await sha256(bytes)) !== expected) throw new Error(`${name} is corrupt or tampered: its sha256 differs`);
  return bytes;
}

function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

// Row-major (numItems, dim) float32 vectors, exactly the values the Python reader decodes.
function decodeVectors(spec, data, scales, numItems, dim) {
  const size = numItems * dim;
  const out = new Float32Array(size);
  if (spec.dtype === 'float16') {
    const half = new Uint16Array(data.buffer, data.byteOffset, data.byteLength / 2);
    if (half.length !== size) throw new Error(`${spec.file} holds ${half.length} values, expected ${size}`);
    for (let i = 0; i < size; i++) out[i] = halfToFloat(half[i]);
  } else {
    const codes = new Int8Array(data.buffer, data.byteOffset, data.byteLength);
    const scale = new Float32Array(scales.buffer, scales.byteOffset, scales.byteLength / 4);
    if (codes.length !== size || scale.length !== numItems) throw new Error(`${spec.file}: wrong size`);
    for (let i = 0; i < size; i++) out[i] = codes[i] * scale[Math.floor(i / dim)];
  }
  return out;
}

async function loadModel() {
  const manifest = await readManifest();
  const spec = manifest.vectors;
  const names = [manifest.encoder.file, spec.file, manifest.items, 'ort-wasm-simd-threaded.wasm'];
  if (spec.scales) names.push(spec.scales);
  const blobs = Object.fromEntries(
    await Promise.all(names.map(async (name) => [name, await checkedFile(manifest, name)])),
  );
  const items = JSON.parse(new TextDecoder().decode(blobs[manifest.items]));
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.proxy = false;
  ort.env.wasm.wasmPaths = new URL('./', location.href).href;
  ort.env.wasm.wasmBinary = blobs['ort-wasm-simd-threaded.wasm'];
  const session = await ort.InferenceSession.create(blobs[manifest.encoder.file], {
    executionProviders: ['wasm'],
    graphOptimizationLevel: 'all',
  });
  const n = manifest.num_items;
  const unavailable = new Uint8Array(n);
  if (items.available) items.available.forEach((ok, row) => { unavailable[row] = ok ? 0 : 1; });
  const model = {
    manifest,
    session,
    output: session.outputNames[0],
    n,
    dim: manifest.dim,
    vectors: decodeVectors(spec, blobs[spec.file], blobs[spec.scales], n, manifest.dim),
    ids: items.ids,
    rowOf: new Map(items.ids.map((id, row) => [id, row])),
    unavailable,
    byPopularity: items.ids.map((_, row) => row).sort((a, b) => items.popularity[b] - items.popularity[a]),
    popularity: items.popularity,
  };
  const history = manifest.inputs.find((input) => input.name === 'history');
  const longest = history ? history.max_len ?? history.shape[1] : 1;
  await session.run(feeds(model, new Array(longest).fill(0))); // the slow first run, before any user's
  return model;
}

// One-request encoder inputs: the history right-aligned and 0-padded (model id = row + id_offset, newest
// max_len kept), every other input zeros (unknown), as rectorch.serving.encoder.build_feed builds them.
function feeds(model, rows) {
  const out = {};
  for (const input of model.manifest.inputs) {
    const [Typed, cast] = ARRAYS[input.dtype];
    if (input.name === 'history') {
      const length = input.max_len == null ? input.shape[1] : Math.max(1, Math.min(input.max_len, rows.length));
      const tail = rows.slice(-length);
      const data = new Typed(length);
      tail.forEach((row, i) => { data[length - tail.length + i] = cast(row + model.manifest.id_offset); });
      out[input.name] = new ort.Tensor(input.dtype, data, [1, length]);
    } else {
      const dims = input.shape.slice(1);
      out[input.name] = new ort.Tensor(input.dtype, new Typed(dims.reduce((a, b) => a * b, 1)), [1, ...dims]);
    }
  }
  return out;
}

// The k best rows by inner product, skipping blocked rows; ties keep the lower row first.
function topK(model, query, blocked, k) {
  const rows = [];
  const scores = [];
  const { vectors, dim } = model;
  for (let row = 0; row < model.n; row++) {
    if (blocked[row]) continue;
    let score = 0;
    for (let d = 0, base = row * dim; d < dim; d++) score += vectors[base + d] * query[d];
    if (rows.length === k && !(score > scores[k - 1])) continue;
    let at = rows.length;
    while (at > 0 && scores[at - 1] < score) at--;
    rows.splice(at, 0, row);
    scores.splice(at, 0, score);
    if (rows.length > k) { rows.pop(); scores.pop(); }
  }
  return { rows, scores };
}

async function recommend(model, history, k = 10) {
  const maxK = model.manifest.serving.max_k;
  if (!Number.isInteger(k) || k < 1 || k > maxK) throw new Error(`k must be between 1 and ${maxK}, got ${k}`);
  const start = performance.now();
  const rows = [];
  const unknown = [];
  for (const id of history) {
    const row = model.rowOf.get(String(id));
    if (row === undefined) unknown.push(String(id)); else rows.push(row);
  }
  const blocked = model.unavailable.slice();
  if (model.manifest.serving.exclude_seen) for (const row of rows) blocked[row] = 1;
  let top;
  let query = null;
  if (rows.length === 0) {
    const picked = model.byPopularity.filter((row) => !blocked[row]).slice(0, k);
    top = { rows: picked, scores: picked.map((row) => model.popularity[row]) };
  } else {
    const result = await model.session.run(feeds(model, rows));
    query = Float32Array.from(result[model.output].data);
    if (model.manifest.metric === 'cosine') {
      const norm = Math.max(Math.hypot(...query), 1e-12);
      for (let d = 0; d < query.length; d++) query[d] /= norm;
    }
    top = topK(model, query, blocked, k);
  }
  const ms = performance.now() - start;
  return {
    items: top.rows.map((row) => model.ids[row]),
    scores: top.scores,
    fallback: query === null ? 'empty_history' : null,
    unknown,
    ms,
    query: query && Array.from(query),
  };
}

// ---- the page: history in localStorage, rendered lists ----

function storageKey(model) {
  return `rectorch.history:${model.manifest.source.dataset || 'default'}`;
}

function loadHistory(model) {
  try {
    const stored = JSON.parse(localStorage.getItem(storageKey(model)) || '[]');
    return Array.isArray(stored) ? stored.map(String) : [];
  } catch {
    return [];
  }
}

function saveHistory(model, ids) {
  const kept = ids.map(String).slice(-model.manifest.serving.max_history);
  localStorage.setItem(storageKey(model), JSON.stringify(kept));
  return kept;
}

function listItem(text, note, label, onClick) {
  const li = document.createElement('li');
  const id = document.createElement('span');
  id.className = 'item';
  id.textContent = text;
  li.append(id);
  if (note) {
    const span = document.createElement('span');
    span.className = 'score';
    span.textContent = note;
    li.append(span);
  }
  const button = document.createElement('button');
  button.textContent = label;
  button.addEventListener('click', onClick);
  li.append(button);
  return li;
}

async function render(model) {
  const ids = loadHistory(model);
  const history = document.getElementById('history');
  history.replaceChildren(...ids.map((id, i) => listItem(id, '', 'remove', () => {
    saveHistory(model, ids.filter((_, j) => j !== i));
    render(model);
  })));
  const result = await recommend(model, ids, 10);
  document.getElementById('latency').textContent = `(${result.ms.toFixed(1)} ms on this device)`;
  const list = document.getElementById('recommended');
  list.replaceChildren(...result.items.map((id, i) => {
    const note = result.fallback ? 'popular' : result.scores[i].toFixed(3);
    return listItem(id, note, 'add', () => { saveHistory(model, [...ids, id]); render(model); });
  }));
  list.dataset.items = JSON.stringify(result.items);
  return result;
}

function setStatus(text, error = false) {
  const status = document.getElementById('status');
  status.textContent = text;
  status.className = error ? 'error' : '';
}

async function start() {
  const model = await loadModel();
  const datalist = document.getElementById('catalog');
  datalist.replaceChildren(...model.ids.map((id) => Object.assign(document.createElement('option'), { value: id })));
  document.getElementById('add').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = document.getElementById('item');
    const id = input.value.trim();
    if (!model.rowOf.has(id)) { setStatus(`unknown item ${JSON.stringify(id)}`, true); return; }
    input.value = '';
    saveHistory(model, [...loadHistory(model), id]);
    render(model).then(() => setStatus(ready(model)));
  });
  document.getElementById('clear').addEventListener('click', () => { saveHistory(model, []); render(model); });
  for (const id of ['item', 'add-button', 'clear']) document.getElementById(id).disabled = false;
  await render(model);
  setStatus(ready(model));
  document.body.dataset.ready = 'true';
  return model;
}

function ready(model) {
  const { manifest } = model;
  return `${manifest.family}: ${model.n} items, ${manifest.encoder.precision} encoder, ${manifest.vectors.dtype} `
    + `vectors, onnxruntime-web ${manifest.runtime.version}; your history stays in this browser.`;
}

const loaded = start();
loaded.catch((error) => { setStatus(`could not load the bundle: ${error.message}`, true); });
window.rectorch = {
  ready: loaded.then((model) => ({
    numItems: model.n,
    dim: model.dim,
    precision: model.manifest.encoder.precision,
    vectors: model.manifest.vectors.dtype,
    runtime: model.manifest.runtime.version,
  })),
  recommend: async (history, k = 10) => recommend(await loaded, history, k),
  history: async () => loadHistory(await loaded),
  setHistory: async (ids) => { const model = await loaded; saveHistory(model, ids); return render(model); },
};
