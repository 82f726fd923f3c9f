'use strict';
// A WAV (RIFF/WAVE) reader: PCM 8/16/24/32-bit and IEEE float 32/64-bit, any channel
// count, WAVE_FORMAT_EXTENSIBLE included. Written here rather than taken from npm because
// the npm decoders (node-wav, wav-decoder, wavefile) scale positive integer samples by
// 1/32767 and negative ones by 1/32768; libsndfile, which fusionedge's Python side
// reads audio with, divides every sample by 2^(bits-1), and the model must see the same
// floats (docs/PREPROCESSING.md, "Audio").

const f32 = Math.fround;
const PCM = 1;
const FLOAT = 3;
const EXTENSIBLE = 0xfffe;

// Returns { sampleRate, channels: [Float32Array per channel] }.
function readWav(buffer) {
  if (buffer.length < 12 || buffer.toString('ascii', 0, 4) !== 'RIFF' || buffer.toString('ascii', 8, 12) !== 'WAVE') {
    throw new Error('not a RIFF/WAVE file');
  }
  let fmt = null;
  let data = null;
  for (let pos = 12; pos + 8 <= buffer.length; ) {
    const id = buffer.toString('ascii', pos, pos + 4);
    const size = buffer.readUInt32LE(pos + 4);
    const body = buffer.subarray(pos + 8, Math.min(buffer.length, pos + 8 + size));
    if (id === 'fmt ') fmt = body;
    if (id === 'data') data = body;
    pos += 8 + size + (size % 2); // chunks are padded to an even size
  }
  if (fmt === null || data === null) throw new Error('WAV file without fmt or data chunk');
  let format = fmt.readUInt16LE(0);
  const channels = fmt.readUInt16LE(2);
  const sampleRate = fmt.readUInt32LE(4);
  const bits = fmt.readUInt16LE(14);
  if (format === EXTENSIBLE && fmt.length >= 26) format = fmt.readUInt16LE(24); // sub-format GUID
  const bytes = bits / 8;
  const frames = Math.floor(data.length / (bytes * channels));
  const out = Array.from({ length: channels }, () => new Float32Array(frames));
  // libsndfile's int -> float: x * 2^-(bits - 1), in float32 (a power of two: exact).
  const read = {
    [`${PCM}:8`]: (o) => (data[o] - 128) / 128, // 8-bit WAV is unsigned
    [`${PCM}:16`]: (o) => data.readInt16LE(o) / 32768,
    [`${PCM}:24`]: (o) => data.readIntLE(o, 3) / 8388608,
    [`${PCM}:32`]: (o) => f32(data.readInt32LE(o)) / 2147483648,
    [`${FLOAT}:32`]: (o) => data.readFloatLE(o),
    [`${FLOAT}:64`]: (o) => data.readDoubleLE(o),
  }[`${format}:${bits}`];
  if (read === undefined) throw new Error(`unsupported WAV encoding: format ${format}, ${bits} bits`);
  for (let i = 0; i < frames; i++) {
    for (let c = 0; c < channels; c++) out[c][i] = read((i * channels + c) * bytes);
  }
  return { sampleRate, channels: out };
}

module.exports = { readWav };
