"""``python -m deploy.native_backend``: build Triton's ONNX Runtime backend once for the pinned versions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deploy.native_backend.build import build_backend, is_current
from deploy.native_backend.errors import BackendBuildError
from deploy.native_backend.locate import BACKENDS_ENV, backends_dir
from deploy.native_backend.pins import ONNXRUNTIME_VERSION, SERVER_VERSION, TRITON_RELEASE


def main(argv: list[str] | None = None) -> int:
    """Parse the options, build (or find up to date), print one ``error:`` line on failure."""
    parser = argparse.ArgumentParser(
        prog="python -m deploy.native_backend",
        description=(
            f"Build Triton's ONNX Runtime backend (libtriton_onnxruntime.so) from its {TRITON_RELEASE} sources, "
            f"the release of the bundled tritonserver {SERVER_VERSION}, against the onnxruntime {ONNXRUNTIME_VERSION} "
            "wheel's C library. Skipped when a build for the same pins exists."
        ),
    )
    parser.add_argument("--sources", type=Path, default=None,
                        help="a local folder with the source archives (default: fetch the pinned commits from GitHub)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"the backends folder (default: ${BACKENDS_ENV} or {backends_dir()})")
    parser.add_argument("--force", action="store_true", help="rebuild even when the existing build matches the pins")
    parser.add_argument("--check", action="store_true", help="only say whether a current build exists (exit 0) or not (exit 1)")
    args = parser.parse_args(argv)
    if args.check:
        current = is_current(args.out)
        print("up to date" if current else "not built, or built for other pins: run without --check to build")
        return 0 if current else 1
    try:
        build_backend(sources=args.sources, out=args.out, force=args.force)
    except BackendBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
