#!/usr/bin/env node
'use strict';
// Runs a fusionedge model from Node.js: reads model.json (written by `fusionedge export`
// beside model.onnx), checks that it belongs to the model file, prepares an image, a WAV
// and/or a line of text exactly as fusionedge's Python runtime does, runs the model with
// onnxruntime-node and prints the label and scores as JSON.
//
//   node predict.js model.onnx --image photo.png --audio clip.wav --text "seven"
//
// Any subset of the model's modalities may be given; the others are marked absent.
// The steps and their numbers come from model.json (docs/PREPROCESSING.md explains each).

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const ort = require('onnxruntime-node');
const sharp = require('sharp');
const { resize, roundHalfEven } = require('./resize');
const { readWav } = require('./wav');

function parseArgs(argv) {
  const args = { model: null, modelJson: null, image: null, audio: null, text: null };
  const flags = { '--image': 'image', '--audio': 'audio', '--text': 'text', '--model-json': 'modelJson' };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] in flags) args[flags[argv[i]]] = argv[++i];
    else if (args.model === null) args.model = argv[i];
    else throw new Error(`unexpected argument ${argv[i]}`);
  }
  if (args.model === null) {
    throw new Error('usage: node predict.js MODEL.onnx [--image FILE] [--audio FILE.wav] [--text TEXT] [--model-json FILE]');
  }
  // model.onnx -> model.json beside it (as export writes it).
  args.modelJson ??= path.join(path.dirname(args.model), `${path.basename(args.model, '.onnx')}.json`);
  return args;
}

// model.json lists every file of the export with the sha256 of its bytes: refuse a
// model file it does not describe (a newer export, a different model).
function checkPair(modelPath, description, jsonPath) {
  const base = path.dirname(jsonPath);
  const entry = description.files.find((f) => path.resolve(base, f.path) === path.resolve(modelPath));
  if (entry === undefined) throw new Error(`${jsonPath} does not describe ${modelPath}`);
  const sha256 = crypto.createHash('sha256').update(fs.readFileSync(modelPath)).digest('hex');
  if (sha256 !== entry.sha256) {
    throw new Error(`${modelPath} has sha256 ${sha256}; ${jsonPath} belongs to a file with ${entry.sha256}`);
  }
}

// ---------------------------------------------------------------------------- image

// Image file -> uint8 RGB HWC of the model's size (preprocessing.image).
async function prepareImage(file, p) {
  // Decode as OpenCV does: EXIF orientation applied, ICC profile ignored; raw samples.
  const { data, info } = await sharp(fs.readFileSync(file), { autoOrient: true, ignoreIcc: true })
    .raw({ depth: 'uchar' }) // 16-bit images: the high byte, as fusionedge keeps
    .toBuffer({ resolveWithObject: true });
  const { width: w, height: h, channels } = info;
  // To RGB: grey copied to R, G and B; alpha dropped, not composited.
  const rgb = new Uint8Array(w * h * 3);
  for (let i = 0; i < w * h; i++) {
    for (let c = 0; c < 3; c++) rgb[i * 3 + c] = data[i * channels + (channels < 3 ? 0 : c)];
  }
  const { height: H, width: W, mode } = p.resize;
  if (h === H && w === W) return rgb;
  // OpenCV's INTER_AREA when the target has fewer pixels, INTER_LINEAR otherwise.
  const shrinkOrEnlarge = (nw, nh) => resize(rgb, w, h, 3, nw, nh, nw * nh < w * h ? 'area' : 'linear');
  if (mode === 'stretch') return shrinkOrEnlarge(W, H);
  // Letterbox: keep the aspect ratio, centre, pad with black.
  const scale = Math.min(W / w, H / h);
  const nw = Math.max(1, roundHalfEven(w * scale));
  const nh = Math.max(1, roundHalfEven(h * scale));
  const small = shrinkOrEnlarge(nw, nh);
  const out = new Uint8Array(H * W * 3);
  const top = Math.floor((H - nh) / 2);
  const left = Math.floor((W - nw) / 2);
  for (let y = 0; y < nh; y++) out.set(small.subarray(y * nw * 3, (y + 1) * nw * 3), ((top + y) * W + left) * 3);
  return out;
}

// ---------------------------------------------------------------------------- audio

// WAV file -> float32 mono window of num_samples at sample_rate (preprocessing.audio).
function prepareAudio(file, p) {
  const { sampleRate, channels } = readWav(fs.readFileSync(file));
  if (sampleRate !== p.sample_rate) {
    // fusionedge resamples with soxr (quality HQ); no npm package runs soxr, and another
    // resampler gives other samples. Resample beforehand, e.g. with sox, or ffmpeg -af
    // aresample=resampler=soxr:precision=20 -ar RATE.
    throw new Error(`${file} is at ${sampleRate} Hz; this example takes WAV files at the model's ${p.sample_rate} Hz`);
  }
  // Mono: the float32 mean of the channels, summed in order.
  const frames = channels[0].length;
  const mono = new Float32Array(frames);
  for (let i = 0; i < frames; i++) {
    let s = channels[0][i];
    for (let c = 1; c < channels.length; c++) s = Math.fround(s + channels[c][i]);
    mono[i] = channels.length > 1 ? Math.fround(s / channels.length) : s;
  }
  // Centre window: crop the middle, or zero-pad both sides.
  const n = p.num_samples;
  const out = new Float32Array(n);
  if (frames >= n) out.set(mono.subarray((frames - n) >> 1, ((frames - n) >> 1) + n));
  else out.set(mono, (n - frames) >> 1);
  return out;
}

// ---------------------------------------------------------------------------- text

// Text -> int64 token ids (preprocessing.text; the "char" tokenizer).
function prepareText(text, p, vocab) {
  if (p.tokenizer !== 'char') {
    throw new Error(`this example implements the "char" tokenizer, not "${p.tokenizer}" (docs/PREPROCESSING.md)`);
  }
  let norm = text.normalize('NFKC');
  if (p.lowercase) norm = norm.toLowerCase();
  const chars = Array.from(norm.split(/\s+/).filter(Boolean).join(' ')).slice(0, p.max_length);
  const ids = new Map(vocab.map((c, i) => [c, i + 2])); // vocab[i] -> i + 2
  const out = new BigInt64Array(p.max_length).fill(BigInt(p.pad_id));
  chars.forEach((c, i) => (out[i] = BigInt(ids.get(c) ?? p.unk_id)));
  return out;
}

// ---------------------------------------------------------------------------- main

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const description = JSON.parse(fs.readFileSync(args.modelJson, 'utf8'));
  checkPair(args.model, description, args.modelJson);
  const pre = description.preprocessing;
  const given = { image: args.image, audio: args.audio, text: args.text };
  const prepared = {
    image: given.image && (await prepareImage(given.image, pre.image)),
    audio: given.audio && prepareAudio(given.audio, pre.audio),
    text: given.text && given.text.trim() && prepareText(given.text, pre.text, description.spec.text.tokenizer.vocab),
  };
  for (const m of Object.keys(given)) {
    if (given[m] && !description.modalities.includes(m)) throw new Error(`the model takes no ${m}`);
  }

  // One tensor per input of model.json's layout (batch of one); absent ones are zeros.
  const byName = { [pre.image?.input]: 'image', [pre.audio?.input]: 'audio', [pre.text?.input]: 'text' };
  const arrays = { uint8: Uint8Array, float32: Float32Array, int64: BigInt64Array, bool: Uint8Array };
  const feeds = {};
  for (const input of description.inputs) {
    const shape = [1, ...input.shape.slice(1)];
    const size = shape.reduce((a, b) => a * b, 1);
    let data = new arrays[input.dtype](size);
    if (input.name === 'present') data = Uint8Array.from(description.modalities, (m) => (prepared[m] ? 1 : 0));
    else if (prepared[byName[input.name]]) data = prepared[byName[input.name]];
    feeds[input.name] = new ort.Tensor(input.dtype, data, shape);
  }

  const session = await ort.InferenceSession.create(args.model, { executionProviders: ['cpu'] });
  const outputs = await session.run(feeds);
  const row = Array.from(outputs.scores.data); // float32 values, printed as Python prints them
  const labels = description.labels;
  const scores = Object.fromEntries(labels.map((l, i) => [l, row[i]]));
  const present = Object.fromEntries(description.modalities.map((m) => [m, Boolean(prepared[m])]));
  const result = { present };
  if (description.task === 'regression') {
    Object.assign(result, { label: null, value: row[0], scores });
  } else {
    // Highest score first; ties keep label order (a stable sort, as numpy's).
    const ranked = labels.map((l, i) => [l, row[i]]).sort((a, b) => b[1] - a[1]);
    Object.assign(result, { label: ranked[0][0], scores, top_k: ranked });
    if (description.task === 'multilabel') result.active = labels.filter((l) => scores[l] >= 0.5);
  }
  console.log(JSON.stringify(result));
}

main().catch((error) => {
  console.error(`predict.js: error: ${error.message}`);
  process.exit(2);
});
