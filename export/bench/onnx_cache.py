"""The ONNX files ``ser bench`` runs: exported once per shape and quantized once per preset, then reused."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from export.bench.config import BENCH_FORMAT, META_FILENAME, BenchConfig
from export.quantize import QUANTIZATION_PRESETS
from export.versions import installed_versions


def shape_dir(config: BenchConfig, shape: str) -> Path:
    """Where the ONNX files of ``shape`` at this W, label count and seed are cached."""
    return config.workdir / f"{shape}-W{config.window_samples}-c{config.num_labels}-s{config.seed}"


def cache_meta(config: BenchConfig, shape: str) -> dict[str, Any]:
    """What a cached fp32 file was made from: a cached file whose record differs is exported again."""
    from export.onnx_export import EXPORT_REVISION, OnnxExportConfig

    versions = installed_versions(("torch", "transformers"))
    return {
        "onnx_export": {**asdict(OnnxExportConfig()), "revision": EXPORT_REVISION},  # a changed exporter re-exports
        "format": BENCH_FORMAT,
        "shape": shape,
        "window_samples": config.window_samples,
        "num_labels": config.num_labels,
        "seed": config.seed,
        "torch": versions.get("torch"),
        "transformers": versions.get("transformers"),
    }


def ensure_fp32_onnx(classifier, config: BenchConfig, shape: str, *, out: TextIO | None = None) -> Path:
    """The cached fp32 ONNX file of ``shape`` (exported now if missing or made from something else)."""
    from export.onnx_export import export_onnx

    directory = shape_dir(config, shape)
    path, meta_path = directory / "fp32.onnx", directory / META_FILENAME
    meta = cache_meta(config, shape)
    if path.is_file() and meta_path.is_file():
        try:
            if json.loads(meta_path.read_text()) == meta:
                return path
        except ValueError:
            pass
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.onnx"):
        stale.unlink()
    meta_path.unlink(missing_ok=True)
    if out is not None:
        print(f"[bench] exporting {shape} (W={config.window_samples}) to {path} ...", file=out, flush=True)
    t0 = time.perf_counter()
    tmp = directory / ".fp32.onnx.tmp"
    export_onnx(classifier, tmp, window_samples=config.window_samples)
    os.replace(tmp, path)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    if out is not None:
        print(f"[bench]   {path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s", file=out, flush=True)
    return path


def ensure_int8_onnx(fp32_path: Path, preset: str, *, out: TextIO | None = None) -> Path:
    """The cached int8 ONNX file of ``fp32_path`` for a quantization preset (quantized now if missing)."""
    from export.quantize import quantize_int8

    path = fp32_path.parent / f"int8-{preset}.onnx"
    options_path = path.with_suffix(".json")  # the preset's options: a changed preset is re-quantized
    options = json.dumps(QUANTIZATION_PRESETS[preset].to_json(), sort_keys=True)
    if path.is_file() and path.stat().st_mtime >= fp32_path.stat().st_mtime and options_path.is_file() \
            and options_path.read_text() == options:
        return path
    if out is not None:
        print(f"[bench] quantizing {fp32_path.parent.name} with preset {preset} ...", file=out, flush=True)
    t0 = time.perf_counter()
    tmp = fp32_path.parent / f".int8-{preset}.onnx.tmp"
    quantize_int8(fp32_path, tmp, config=QUANTIZATION_PRESETS[preset])
    os.replace(tmp, path)
    options_path.write_text(options)
    if out is not None:
        print(f"[bench]   {path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s", file=out, flush=True)
    return path

