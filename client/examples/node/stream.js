// Stream a 16-bit mono WAV file into the streaming model "ser-stream" as a live call, over Triton's gRPC API.
//
//   npm install                                   # @grpc/grpc-js and @grpc/proto-loader, pinned in package.json
//   python triton_descriptors.py triton.desc      # Triton's protos, from the tritonclient wheel
//   node stream.js triton.desc call.wav [HOST:8001] [--fast]
//
// One ModelStreamInfer stream: 100 ms chunks (pcm_s16) sent in real time (--fast: without waiting), the first
// with sequence_start and sample_rate, the last with sequence_end. Prints one JSON line per update as it
// arrives, then one with the call's segments; exits 1 with the server's reason when it refuses a chunk.
"use strict";
const fs = require("fs");
const crypto = require("crypto");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const args = process.argv.slice(2).filter((a) => a !== "--fast");
const fast = process.argv.includes("--fast");
const [descriptors, file, url = "127.0.0.1:8001"] = args;
if (!descriptors || !file) {
  console.error("usage: node stream.js DESCRIPTORS CALL.wav [HOST:PORT] [--fast]");
  process.exit(2);
}
const definition = protoLoader.loadFileDescriptorSetFromBuffer(fs.readFileSync(descriptors), { longs: String, defaults: true });
const { GRPCInferenceService } = grpc.loadPackageDefinition(definition).inference;
const client = new GRPCInferenceService(url, grpc.credentials.createInsecure());

// The WAV's "fmt " and "data" chunks: 16-bit mono PCM and its rate.
const wav = fs.readFileSync(file);
let rate = 0;
let pcm = null;
for (let at = 12; at + 8 <= wav.length; ) {
  const id = wav.toString("ascii", at, at + 4);
  const size = wav.readUInt32LE(at + 4);
  if (id === "fmt ") {
    if (wav.readUInt16LE(at + 10) !== 1 || wav.readUInt16LE(at + 22) !== 16) throw new Error("need a 16-bit mono WAV");
    rate = wav.readUInt32LE(at + 12);
  } else if (id === "data") {
    pcm = wav.subarray(at + 8, at + 8 + size);
  }
  at += 8 + size + (size % 2);
}

function strings(buffer) {
  const out = [];
  for (let at = 0; at < buffer.length; ) {
    const n = buffer.readUInt32LE(at);
    out.push(buffer.toString("utf8", at + 4, at + 4 + n));
    at += 4 + n;
  }
  return out;
}
const doubles = (buffer) => Array.from({ length: buffer.length / 8 }, (_, i) => buffer.readDoubleLE(8 * i));

const callId = BigInt.asUintN(63, crypto.randomBytes(8).readBigUInt64LE()).toString(); // unique across clients
const stream = client.ModelStreamInfer();
stream.on("data", (response) => {
  if (response.error_message) {
    console.error(`error: ${response.error_message}`);
    process.exit(1);
  }
  const r = response.infer_response;
  const raw = Object.fromEntries(r.outputs.map((o, i) => [o.name, r.raw_output_contents[i]]));
  if (strings(raw.event)[0] === "end") {
    const labels = strings(raw.segment_label);
    const [starts, ends] = [doubles(raw.segment_start_s), doubles(raw.segment_end_s)];
    const round = (x) => Math.round(x * 1000) / 1000;
    console.log(JSON.stringify({ segments: labels.map((l, i) => [l, round(starts[i]), round(ends[i])]) }));
    stream.end();
    client.close();
    return;
  }
  console.log(JSON.stringify({ start_s: doubles(raw.window_start_s)[0], end_s: doubles(raw.window_end_s)[0],
                               speech: raw.speech[0] === 1, label: strings(raw.label)[0] }));
});
stream.on("error", (error) => {
  console.error(`error: ${grpc.status[error.code]}: ${error.details}`);
  process.exit(1);
});

const step = 2 * Math.floor(rate / 10); // 100 ms of int16 samples, in bytes
const started = Date.now();
async function send() {
  for (let at = 0; at < pcm.length; at += step) {
    const chunk = pcm.subarray(at, Math.min(at + step, pcm.length));
    const inputs = [{ name: "pcm_s16", datatype: "INT16", shape: [1, chunk.length / 2] }];
    const contents = [chunk];
    if (at === 0) {
      const sr = Buffer.alloc(4);
      sr.writeInt32LE(rate);
      inputs.push({ name: "sample_rate", datatype: "INT32", shape: [1, 1] });
      contents.push(sr);
    }
    if (!fast) {  // a chunk leaves once it has been spoken
      await new Promise((done) => setTimeout(done, Math.max(0, started + ((at + chunk.length) / 2 / rate) * 1000 - Date.now())));
    }
    stream.write({
      model_name: "ser-stream", id: `${callId}:${at}`, inputs, raw_input_contents: contents,
      parameters: [  // a map in Triton's protos, an array of entries through the descriptor set
        { key: "sequence_id", value: { int64_param: callId } },
        { key: "sequence_start", value: { bool_param: at === 0 } },
        { key: "sequence_end", value: { bool_param: at + step >= pcm.length } },
      ],
    });
  }
}
send();
