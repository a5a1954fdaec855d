"""Which int8 instruction-set class a CPU belongs to, read from its feature flags.

ONNX Runtime picks its integer GEMM kernel by CPU, and the kernels differ in how they
add up the products of u8 activations and s8 weights:

* ``avx2``: x86-64 without VNNI (AVX2, or AVX-512BW without VNNI). ``vpmaddubsw`` adds two
  u8*s8 products into a *saturating* int16 before widening, so a weight of magnitude
  above 64 can clip a sum (2 * 255 * 64 = 32640 <= 32767 < 2 * 255 * 65).
* ``vnni``: AVX512-VNNI or AVX-VNNI. ``vpdpbusd`` accumulates four products in int32:
  nothing saturates.
* ``amx``: AMX-INT8 tiles, int32 accumulation as with VNNI.
* ``other``: anything else (ARM, or no ``/proc/cpuinfo``): not classified.

An int8 model is checked against fp32 on the CPU that exports it, and optionally on the
``avx2`` class through ``qemu-x86_64 -cpu Haswell`` (:mod:`export.isa_check`). The classes
it passed on travel with it (recipe and config parameter
:data:`VERIFIED_CLASSES_PARAMETER`); the served model compares them with its host at load.

This file uses the standard library only: the repository writer copies it beside the
python-backend ``model.py``, which imports it inside the server.
"""

from __future__ import annotations

from pathlib import Path

#: The classes, from least to most capable.
CPU_CLASSES = ("avx2", "vnni", "amx", "other")
#: Flags of the x86 extensions whose int8 dot products accumulate in int32 (no int16 step).
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})
AMX_FLAGS = frozenset({"amx_int8"})
#: Model config parameter listing the classes an int8 model's parity check passed on (comma-separated).
VERIFIED_CLASSES_PARAMETER = "ser.verified_cpu_classes"


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The first CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none, e.g. macOS)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_class(flags: frozenset[str] | None = None) -> str:
    """The int8 class (one of :data:`CPU_CLASSES`) of a CPU with these flags (default: this host's)."""
    flags = cpu_flags() if flags is None else flags
    if flags & AMX_FLAGS:
        return "amx"
    if flags & VNNI_FLAGS:
        return "vnni"
    if "avx2" in flags:
        return "avx2"
    return "other"


def cpu_has_vnni(flags: frozenset[str] | None = None) -> bool:
    """Whether this CPU's int8 GEMMs accumulate in int32 (VNNI or AMX), so no u8*s8 pair saturates."""
    return cpu_class(flags) in ("vnni", "amx")


def parse_classes(text: str) -> tuple[str, ...]:
    """``"avx2,vnni"`` -> ``("avx2", "vnni")``; unknown names are kept (a newer writer may know more)."""
    return tuple(c.strip() for c in text.split(",") if c.strip())


def unverified_warning(model: str, verified: str, flags: frozenset[str] | None = None) -> str | None:
    """The one-line warning a served int8 model logs when its host's class was never verified.

    Args:
        model: the model's name.
        verified: the config parameter's value (comma-separated classes; empty: not recorded).
        flags: the host's CPU flags (default: this host's).

    Returns:
        The warning, or ``None`` when the host's class is among ``verified`` or nothing was recorded.
    """
    classes = parse_classes(verified)
    host = cpu_class(flags)
    if not classes or host in classes:
        return None
    return (f"model {model!r}: int8 parity with fp32 was verified on CPU class(es) {', '.join(classes)}, "
            f"not on this host's class {host!r}; answers may differ from the verified ones "
            f"(re-check with `ser repository --verify-cpu-class`)")
