"""Triton's own ONNX Runtime backend (``libtriton_onnxruntime.so``), built from its public source.

The ``nvidia-pytriton`` wheel ships ``tritonserver`` 2.51 with the python backend only. The native
repository (``platform: "onnxruntime_onnx"``) needs the backend the NGC container ships; it builds in
seconds from the release branch that matches the bundled server, against the C library of the pinned
``onnxruntime`` wheel:

* :mod:`deploy.native_backend.pins` — which sources and why they match the server and the wheel;
* :mod:`deploy.native_backend.sources` — fetching (GitHub) or reading (a local folder) and unpacking them;
* :mod:`deploy.native_backend.build` — CMake, the backend folder the server loads, the cache stamp;
* :mod:`deploy.native_backend.locate` — where a built backend is found at serve time.

``python -m deploy.native_backend --help`` runs the build; ``make venv`` (and so ``make demo`` and
``make test``) calls it once and again only when a pin changes.
"""
