// The page: record from the microphone (Web Audio, encoded to WAV here) or take a dropped file, send it to
// POST /v1/images, show the pictures and the per-stage timings. Everything it loads comes from this server.
import { concat, encodeWav } from "/static/wav.js";

const $ = (id) => document.getElementById(id);
const recordButton = $("record");
const RECORD_LIMIT_S = 15; // a spoken description is a few seconds; the server's own limit may be lower
const KEEP_RESULTS = 8;

let maxSeconds = RECORD_LIMIT_S;
let recording = null;

function setStatus(text) { $("status").textContent = text; }

function showError(text) {
  const box = $("error");
  box.textContent = text || "";
  box.hidden = !text;
}

async function getJson(path) {
  const response = await fetch(path);
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

// -- recording ----------------------------------------------------------------------------------------

async function startRecording() {
  showError("");
  // The audio graph first, the microphone last: the first word spoken after the click is not lost while the
  // worklet loads.
  const context = new AudioContext();
  await context.audioWorklet.addModule("/static/recorder-worklet.js");
  const node = new AudioWorkletNode(context, "pcm-recorder");
  let stream;
  try {
    // No processing: the model was trained on clean speech, and echo cancellation or gain control would
    // change what it hears.
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
  } catch (error) {
    await context.close();
    throw error;
  }
  const source = context.createMediaStreamSource(stream);
  const chunks = [];
  let samples = 0;
  node.port.onmessage = (event) => {
    chunks.push(event.data);
    samples += event.data.length;
    let energy = 0;
    for (const v of event.data) energy += v * v;
    $("level").style.width = `${Math.min(100, Math.sqrt(energy / event.data.length) * 400)}%`;
    const seconds = samples / context.sampleRate;
    setStatus(`Recording… ${seconds.toFixed(1)} s (press Stop when done)`);
    if (seconds >= maxSeconds) stopRecording();
  };
  source.connect(node);
  node.connect(context.destination); // the node outputs silence; connected so the graph keeps pulling it
  recording = { stream, context, node, chunks };
  recordButton.textContent = "Stop";
  recordButton.classList.add("recording");
}

async function stopRecording() {
  if (!recording) return;
  const { stream, context, node, chunks } = recording;
  recording = null;
  node.port.onmessage = null;
  node.disconnect();
  stream.getTracks().forEach((track) => track.stop());
  const rate = context.sampleRate;
  await context.close();
  recordButton.textContent = "Record";
  recordButton.classList.remove("recording");
  $("level").style.width = "0";
  const audio = concat(chunks);
  if (audio.length === 0) {
    showError("No sound arrived from the microphone.");
    setStatus("Ready.");
    return;
  }
  await generate(encodeWav(audio, rate), "recording");
}

async function toggleRecording() {
  try {
    if (recording) await stopRecording();
    else await startRecording();
  } catch (error) {
    recording = null;
    recordButton.textContent = "Record";
    recordButton.classList.remove("recording");
    showError(`Microphone: ${error.message || error}. (Browsers allow it on localhost or https only.)`);
    setStatus("Ready.");
  }
}

// -- asking the server ----------------------------------------------------------------------------------

async function generate(body, what) {
  const numImages = Math.max(1, parseInt($("num-images").value, 10) || 1);
  const seed = Math.max(0, parseInt($("seed").value, 10) || 0);
  setStatus(`Drawing ${what}…`);
  recordButton.disabled = true;
  const started = performance.now();
  try {
    const init = { method: "POST", body, headers: { Accept: "application/json" } };
    if (!(body instanceof FormData)) init.headers["Content-Type"] = body.type || "application/octet-stream";
    const response = await fetch(`/v1/images?format=json&num_images=${numImages}&seed=${seed}`, init);
    const answer = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    if (!response.ok) {
      showError(answer.error || `HTTP ${response.status}`);
      setStatus("Ready.");
      return;
    }
    showError("");
    showResult(answer, what, performance.now() - started);
    setStatus(`Done: ${answer.images.length} picture(s). Speak again?`);
  } catch (error) {
    showError(`The server did not answer: ${error.message || error}`);
    setStatus("Ready.");
  } finally {
    recordButton.disabled = false;
  }
}

function showResult(answer, what, roundTripMs) {
  const results = $("results");
  if (results.querySelector(".muted")) results.textContent = "";
  const card = document.createElement("article");
  card.className = "result";
  const title = document.createElement("p");
  title.textContent = `${what}: ${answer.input.seconds.toFixed(1)} s of audio, seed ${answer.seed}`;
  const images = document.createElement("div");
  images.className = "images";
  answer.images.forEach((png, k) => {
    const img = document.createElement("img");
    img.className = "generated";
    img.alt = `picture ${k + 1} for ${what}`;
    img.src = `data:${answer.media_type};base64,${png}`;
    images.append(img);
  });
  const table = document.createElement("table");
  table.className = "timings";
  const rows = { ...answer.timings_s, "round trip (browser)": roundTripMs / 1000 };
  for (const [stage, seconds] of Object.entries(rows)) {
    const row = table.insertRow();
    row.insertCell().textContent = stage.replaceAll("_", " ");
    const cell = row.insertCell();
    cell.className = "ms";
    cell.textContent = `${(seconds * 1000).toFixed(1)} ms`;
  }
  card.append(title, images, table);
  results.prepend(card);
  while (results.children.length > KEEP_RESULTS) results.lastChild.remove();
}

// -- files ----------------------------------------------------------------------------------------------

function sendFile(file) {
  if (!file) return;
  const form = new FormData();
  form.append("audio", file, file.name);
  generate(form, file.name);
}

function wireDrop() {
  const zone = $("drop");
  $("file").addEventListener("change", (event) => { sendFile(event.target.files[0]); event.target.value = ""; });
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    sendFile(event.dataTransfer.files[0]);
  });
}

// -- what the model understands -----------------------------------------------------------------------

function chips(words, colourOf) {
  const box = document.createElement("div");
  box.className = "chips";
  for (const word of words) {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.textContent = word;
    const colour = colourOf && colourOf(word);
    if (colour) { chip.classList.add("colour"); chip.style.background = colour; }
    box.append(chip);
  }
  return box;
}

function showVocabulary(answer) {
  const box = $("vocabulary");
  box.textContent = "";
  const vocab = answer.vocabulary;
  if (Array.isArray(vocab)) {
    box.append(chips(vocab));
    return;
  }
  const hues = vocab.hues || {};
  const groups = [["sizes", vocab.sizes], ["colours", vocab.colours], ["shapes", vocab.shapes]];
  for (const [name, words] of groups) {
    if (!words) continue;
    const label = document.createElement("p");
    label.textContent = name;
    box.append(label, chips(words, name === "colours" ? (w) => (w in hues ? `hsl(${hues[w]} 85% 45%)` : null) : null));
  }
  const hint = document.createElement("p");
  const example = [vocab.sizes?.[1], vocab.colours?.[0], vocab.shapes?.[3]].filter(Boolean).join(" ");
  hint.className = "muted";
  hint.textContent = `Say for example "a ${example}" (dataset: ${answer.dataset}).`;
  box.append(hint);
  if (vocab.test_classes?.length) {
    const unseen = document.createElement("p");
    unseen.className = "muted";
    unseen.textContent = "Never seen in training, so a real test: " +
      vocab.test_classes.map((c) => c.replace("_", " ")).join(", ") + ".";
    box.append(unseen);
  }
}

async function start() {
  wireDrop();
  recordButton.addEventListener("click", toggleRecording);
  try {
    const [vocabulary, limits, info] = await Promise.all([getJson("/v1/vocabulary"), getJson("/v1/limits"),
                                                          getJson("/v1/info")]);
    showVocabulary(vocabulary);
    maxSeconds = Math.min(RECORD_LIMIT_S, limits.max_audio_seconds);
    $("num-images").max = limits.max_images;
    const model = info.bundle_info.model || {};
    $("model").textContent = `model: ${info.bundle}` +
      (model.image_sizes ? `, ${model.image_sizes.join("/")} px` : "") + `; runs on ${info.auto}`;
  } catch (error) {
    showError(`Could not reach the server: ${error.message || error}`);
  }
  recordButton.textContent = "Record";
  recordButton.disabled = false;
  setStatus("Ready: press Record and describe a picture.");
}

start();
