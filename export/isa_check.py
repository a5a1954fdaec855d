"""The int8-vs-fp32 agreement check run on another CPU class than this host's.

ONNX Runtime chooses its integer GEMM kernels from ``cpuid``. ``qemu-x86_64 -cpu Haswell``
(Debian's ``qemu-user``) reports an AVX2 CPU without VNNI, so ONNX Runtime takes the
``avx2`` kernels under it on any x86-64 host: the same instructions, emulated exactly,
an AVX2-only serving node would run (only slower). qemu's TCG does not implement
AVX-512 or AVX-VNNI, so the ``vnni`` and ``amx`` classes can only be checked on such a CPU.

The emulated child runs only the model under test, on the variant check's mixed batches (whether
an answer depends on its batch is checked natively), and
saves its outputs; the fp32 reference runs natively here and the comparison applies the
export's own tolerances (:func:`export.parity.compare_variants`).

Usage as a script (what the emulator runs)::

    python -m export.isa_check CANDIDATE.onnx WINDOWS.npz PARITY_JSON OUT.npz
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from client.errors import ConfigError
from export.cpu_class import CPU_CLASSES, cpu_class
from export.errors import ExportError
from export.parity import (
    ParityConfig,
    ParityReport,
    compare_variants,
    run_outputs,
    variant_runs,
    variant_windows,
)

#: qemu CPU models that make ONNX Runtime take a class's kernels (classes qemu can emulate).
EMULATED_CPU_MODELS = {"avx2": "Haswell"}
#: Seconds one emulated check may take (the xlsr-large shape is slow under emulation).
EMULATION_TIMEOUT_S = 1800
#: At most this many windows are checked on an emulated class, spread evenly over the gate's windows:
#: qemu runs ONNX Runtime tens of times slower, and the presets' integer arithmetic is the same on every
#: class, so the emulated check confirms the native one (clip agreement and accuracy are scored natively).
EMULATED_MAX_WINDOWS = 16


def emulator_command(target: str) -> list[str] | None:
    """The command prefix that runs Python on ``target``'s kernels here, or ``None`` where it cannot.

    ``[]`` when this host is of class ``target`` (run natively).

    Raises:
        ConfigError: ``target`` is not a known class.
    """
    if target not in CPU_CLASSES:
        raise ConfigError(f"CPU class {target!r}: unknown; choose from {list(CPU_CLASSES)}")
    if cpu_class() == target:
        return []
    model = EMULATED_CPU_MODELS.get(target)
    if model is None or platform.machine() != "x86_64" or shutil.which("qemu-x86_64") is None:
        return None
    return ["qemu-x86_64", "-cpu", model]


def why_not_emulated(target: str) -> str:
    """Why :func:`emulator_command` returned ``None`` for ``target`` (for error messages)."""
    if target not in EMULATED_CPU_MODELS:
        return (f"class {target!r} cannot be emulated (qemu implements neither AVX-512 nor AVX-VNNI): "
                f"check it on a {target} host")
    if platform.machine() != "x86_64":
        return f"emulating {target!r} needs an x86-64 host (this is {platform.machine()})"
    return "qemu-x86_64 is not installed (Debian: apt-get install qemu-user)"


def compare_on_class(
    reference: str | Path,
    candidate: str | Path,
    *,
    window_samples: int,
    target: str,
    config: ParityConfig | None = None,
    what: str = "int8 vs fp32 ONNX",
    batches: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    clips: tuple[np.ndarray, np.ndarray] | None = None,
) -> ParityReport:
    """:func:`export.parity.compare_variants` on CPU class ``target`` (natively or emulated).

    Args:
        reference: the fp32 ``.onnx``.
        candidate: the variant's ``.onnx``.
        window_samples: W.
        target: a class of :data:`export.cpu_class.CPU_CLASSES`.
        config: batches and tolerances (default: the export's, :class:`~export.parity.ParityConfig`).
        what: how the report names the comparison (``" on <class>"`` is appended).
        batches: real windows instead of the seeded ones (:func:`export.parity.compare_variants`).
        clips: the windows' clips and labels, when they are held-out clips' (scored as whole clips too).

    Returns:
        The report; its ``mismatches`` say what failed (empty: passed).

    Raises:
        ConfigError: the class cannot be checked on this host (the message says why).
        ExportError: the emulated run failed or timed out.
    """
    config = config or ParityConfig()
    prefix = emulator_command(target)
    label = f"{what} on {target}" + ("" if prefix == [] else " (emulated, batched)")
    if prefix is None:
        raise ConfigError(f"cannot check {Path(candidate)} on CPU class {target!r}: {why_not_emulated(target)}")
    if prefix == []:
        return compare_variants(reference, candidate, window_samples=window_samples, config=config, what=label,
                                batches=batches, clips=clips)
    # Emulated, the model runs only the mixed batches: running every window alone too would take ~9x as long
    # under qemu, and whether an answer depends on its batch is a property of the graph, checked natively.
    windows = variant_windows(window_samples, config, batches)
    if len(windows[0]) > EMULATED_MAX_WINDOWS:
        pick = np.linspace(0, len(windows[0]) - 1, EMULATED_MAX_WINDOWS).round().astype(int)
        windows, clips = (windows[0][pick], windows[1][pick]), None
        label += f", {EMULATED_MAX_WINDOWS} of the windows"
    all_runs, mixes = variant_runs(window_samples, config, [windows])
    n = len(all_runs) - len(mixes)
    with tempfile.TemporaryDirectory(prefix="ser-isa-") as tmp:
        out, inputs = Path(tmp) / "outputs.npz", Path(tmp) / "windows.npz"
        np.savez(inputs, waveforms=windows[0], num_samples=windows[1])
        cmd = [*prefix, sys.executable, "-m", "export.isa_check", str(candidate), str(inputs),
               json.dumps({**asdict(config), "batch_sizes": list(config.batch_sizes)}), str(out)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=EMULATION_TIMEOUT_S,
                                  cwd=Path(__file__).resolve().parents[1])
        except subprocess.TimeoutExpired:
            raise ExportError(f"{candidate}: the emulated {target} check took over {EMULATION_TIMEOUT_S} s") from None
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ExportError(f"{candidate}: the emulated {target} check failed (exit {proc.returncode}): {tail[0]}")
        with np.load(out) as saved:
            mixed = [(saved[f"logits_{j}"], saved[f"probabilities_{j}"]) for j in range(len(mixes))]
    # The batched answers stand in for the alone ones (row i of the mixed batch holding window i).
    where = {int(i): (j, r) for j, ix in enumerate(mixes) for r, i in enumerate(ix)}
    alone = [(mixed[where[i][0]][0][where[i][1]][None], mixed[where[i][0]][1][where[i][1]][None]) for i in range(n)]
    outputs = alone + mixed
    # The fp32 reference runs here: only the model under test needs the other class's kernels.
    return compare_variants(reference, candidate, window_samples=window_samples, config=config, what=label,
                            batches=[windows], candidate_outputs=outputs, clips=clips)


def verify_export_on_classes(export_dir: str | Path, classes: Sequence[str], *,
                             config: ParityConfig | None = None) -> tuple[str, ...]:
    """Check an exported int8 model on more CPU classes; return every class it is now verified on.

    Classes already listed in the int8 recipe (``contract.extra["verified_cpu_classes"]``)
    are not checked again.

    Args:
        export_dir: written by ``ser export`` (needs ``fp32/`` and ``int8/``).
        classes: classes to add, e.g. ``("avx2",)``.
        config: tolerances (default: the export's).

    Returns:
        The recipe's classes followed by the newly verified ones.

    Raises:
        ExportError: no int8 or fp32 model in ``export_dir``.
        ParityError: the model disagrees with fp32 on one of ``classes``.
        ConfigError: a class cannot be checked on this host.
    """
    from export.cpu_class import parse_classes
    from export.recipe import MODEL_FILENAME, RECIPE_FILENAME, ExportRecord

    export_dir = Path(export_dir)
    fp32, int8 = export_dir / "fp32" / MODEL_FILENAME, export_dir / "int8" / MODEL_FILENAME
    for path in (fp32, int8):
        if not path.is_file():
            raise ExportError(f"{path}: missing; verifying int8 on another CPU class compares it with the fp32 export "
                              "(export with --variants fp32,int8)")
    recipe = ExportRecord.read(export_dir / "int8" / RECIPE_FILENAME)
    verified = list(parse_classes(recipe.contract.extra.get("verified_cpu_classes", "")))
    for target in classes:
        if target in verified:
            continue
        report = compare_on_class(fp32, int8, window_samples=recipe.contract.window_samples, target=target,
                                  config=config)
        if not report.passed:
            raise report.error()
        verified.append(target)
    return tuple(verified)


def _main(argv: Sequence[str]) -> int:
    candidate, windows, parity_json, out = argv
    d = json.loads(parity_json)
    config = ParityConfig(**{**d, "batch_sizes": tuple(d["batch_sizes"])})
    with np.load(windows) as saved:
        batch = (saved["waveforms"], saved["num_samples"])
    runs, mixes = variant_runs(batch[0].shape[1], config, [batch])
    outputs = run_outputs(candidate, runs[len(runs) - len(mixes):], intra_op_threads=config.intra_op_threads)
    arrays = {}
    for j, (logits, probabilities) in enumerate(outputs):
        arrays[f"logits_{j}"], arrays[f"probabilities_{j}"] = logits, probabilities
    np.savez(out, **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
