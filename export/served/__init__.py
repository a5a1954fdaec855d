"""The python-backend models Triton runs, copied into repositories by the writers.

* :mod:`export.served.window_model` — the portable window model: ONNX Runtime on batched windows;
* :mod:`export.served.audio_model` — the server-side audio model ``ser``: clips in, windows out
  through BLS, label, probabilities and timeline back.

Each file runs inside the backend stub with only what its writer copies beside it (the window model:
``export/cpu_class.py``; the audio model: the client's audio contract), so none imports the rest of
the bundle when it runs in the server.
"""
