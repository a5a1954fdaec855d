// Classify one audio file with the server-side audio model "ser" over Triton's gRPC API (KServe v2).
//
//   npm install                                   # @grpc/grpc-js and @grpc/proto-loader, pinned in package.json
//   python triton_descriptors.py triton.desc      # Triton's protos, from the tritonclient wheel
//   node classify.js triton.desc clip.wav [HOST:8001] [MODEL]
//
// Prints {"label": ..., "probabilities": {...}}; exits 1 with the server's reason when it refuses the clip.
"use strict";
const fs = require("fs");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [descriptors, file, url = "127.0.0.1:8001", model = "ser"] = process.argv.slice(2);
if (!descriptors || !file) {
  console.error("usage: node classify.js DESCRIPTORS AUDIO_FILE [HOST:PORT] [MODEL]");
  process.exit(2);
}
const definition = protoLoader.loadFileDescriptorSetFromBuffer(fs.readFileSync(descriptors), { longs: String, defaults: true });
const { GRPCInferenceService } = grpc.loadPackageDefinition(definition).inference;
const client = new GRPCInferenceService(url, grpc.credentials.createInsecure());

// A BYTES tensor travels as raw bytes: each element is a 4-byte little-endian length, then the bytes.
const audio = fs.readFileSync(file);
const length = Buffer.alloc(4);
length.writeUInt32LE(audio.length);
const request = {
  model_name: model,
  inputs: [{ name: "audio", datatype: "BYTES", shape: [1] }],
  outputs: [{ name: "label" }, { name: "names" }, { name: "scores" }],
  raw_input_contents: [Buffer.concat([length, audio])],
};

function strings(buffer) {
  const out = [];
  for (let at = 0; at < buffer.length; ) {
    const n = buffer.readUInt32LE(at);
    out.push(buffer.toString("utf8", at + 4, at + 4 + n));
    at += 4 + n;
  }
  return out;
}

client.ModelInfer(request, (error, response) => {
  client.close();
  if (error) {
    console.error(`error: ${grpc.status[error.code]}: ${error.details}`);
    process.exit(1);
  }
  const raw = Object.fromEntries(response.outputs.map((o, i) => [o.name, response.raw_output_contents[i]]));
  const names = strings(raw.names);
  const probabilities = Object.fromEntries(names.map((name, i) => [name, raw.scores.readFloatLE(4 * i)]));
  console.log(JSON.stringify({ label: strings(raw.label)[0], probabilities }));
});
