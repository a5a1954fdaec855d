"""Classify one audio file with the server-side audio model ``ser``, with nothing but tritonclient.

Usage: ``python classify_tritonclient.py clip.wav [HOST:8001]``; prints ``{"label": ..., "probabilities": {...}}``.
"""
import json
import sys

import numpy as np
import tritonclient.grpc as tc

path, url = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1:8001"
with open(path, "rb") as f:
    audio = tc.InferInput("audio", [1], "BYTES")
    audio.set_data_from_numpy(np.array([f.read()], dtype=np.object_))
result = tc.InferenceServerClient(url).infer("ser", [audio])
names = [n.decode() for n in result.as_numpy("names")]
scores = dict(zip(names, result.as_numpy("scores").tolist(), strict=True))
print(json.dumps({"label": result.as_numpy("label")[0].decode(), "probabilities": scores}))
