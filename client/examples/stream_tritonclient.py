"""Stream a 16-bit mono WAV file into the streaming model ``ser-stream`` as a live call, with nothing but tritonclient.

Usage: ``python stream_tritonclient.py call.wav [HOST:8001] [--fast]``. Sends 100 ms chunks in real time
(``--fast``: without waiting) on one gRPC stream: the first with START and ``sample_rate``, the last with END.
Prints one JSON line per update as it arrives, then one with the call's segments.
"""
import json
import queue
import random
import sys
import time
import wave

import numpy as np
import tritonclient.grpc as tc

args = [a for a in sys.argv[1:] if a != "--fast"]
path, url, fast = args[0], args[1] if len(args) > 1 else "127.0.0.1:8001", "--fast" in sys.argv
with wave.open(path, "rb") as w:
    assert w.getsampwidth() == 2 and w.getnchannels() == 1, "a 16-bit mono WAV"
    rate, pcm = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)

answers = queue.Queue()
client = tc.InferenceServerClient(url)
client.start_stream(callback=lambda result, error: answers.put((result, error)))
call_id = random.getrandbits(63)  # the sequence id: unique across every client of the server
step = rate // 10
started = time.monotonic()
for i in range(0, len(pcm), step):
    chunk = tc.InferInput("pcm_s16", [1, len(pcm[i:i + step])], "INT16")
    chunk.set_data_from_numpy(pcm[None, i:i + step])
    inputs = [chunk]
    if i == 0:
        sr = tc.InferInput("sample_rate", [1, 1], "INT32")
        sr.set_data_from_numpy(np.array([[rate]], dtype=np.int32))
        inputs.append(sr)
    if not fast:
        time.sleep(max(0.0, started + (i + step) / rate - time.monotonic()))  # once it has been spoken
    client.async_stream_infer("ser-stream", inputs, sequence_id=call_id,
                              sequence_start=i == 0, sequence_end=i + step >= len(pcm))
while True:
    result, error = answers.get(timeout=30)
    if error is not None:
        sys.exit(f"error: {error}")
    text = {name: result.as_numpy(name) for name in ("event", "label", "window_start_s", "window_end_s", "speech")}
    if text["event"][0][0] == b"end":
        segments = zip(result.as_numpy("segment_label")[0], result.as_numpy("segment_start_s")[0],
                       result.as_numpy("segment_end_s")[0], strict=True)
        print(json.dumps({"segments": [[s.decode(), round(a, 3), round(b, 3)] for s, a, b in segments]}))
        break
    print(json.dumps({"start_s": text["window_start_s"][0][0], "end_s": text["window_end_s"][0][0],
                      "speech": bool(text["speech"][0][0]), "label": text["label"][0][0].decode()}), flush=True)
client.stop_stream()
client.close()
