"""Regenerate the shipped logmel.ptx from logmel.cu:  python -m s2i_runtime.cuda.build_ptx [--check]

The one definition of the nvcc command line; the test that compares the shipped PTX with a fresh build
uses it too. nvcc runs in this package's directory with relative file names, so the output does not
depend on where the checkout lives.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..fsutil import atomic_write_bytes
from .plan import PTX_FILE, SOURCE_FILE

CUDA_DIR = Path(__file__).resolve().parent
NVCC_FLAGS = ("-ptx", "-arch=compute_80", "-O3", "-fmad=false")
_RELEASE = re.compile(r"^// Cuda compilation tools, release ([\d.]+), (V[\d.]+)", re.MULTILINE)


def nvcc_command(output: str, nvcc: str = "nvcc") -> list[str]:
    return [nvcc, *NVCC_FLAGS, "-o", output, SOURCE_FILE]


def compile_ptx(nvcc: str = "nvcc") -> bytes:
    """PTX of logmel.cu as this machine's nvcc builds it. RuntimeError when nvcc fails."""
    if shutil.which(nvcc) is None:
        raise FileNotFoundError(f"{nvcc} not found")
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / PTX_FILE
        command = nvcc_command(str(output), nvcc)
        result = subprocess.run(command, cwd=CUDA_DIR, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"nvcc failed: {' '.join(command)}\n{result.stderr}")
        return output.read_bytes()


def nvcc_release(ptx: bytes) -> str | None:
    """The 'release 13.0, V13.0.88' part of the header nvcc writes into PTX, or None."""
    match = _RELEASE.search(ptx.decode("utf-8", errors="replace"))
    return f"{match.group(1)}, {match.group(2)}" if match else None


def without_header_comments(ptx: bytes) -> bytes:
    """PTX without nvcc's leading comment block (compiler build id and version)."""
    lines = ptx.splitlines(keepends=True)
    start = 0
    while start < len(lines) and (lines[start].startswith(b"//") or not lines[start].strip()):
        start += 1
    return b"".join(lines[start:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether the shipped PTX is current")
    parser.add_argument("--nvcc", default="nvcc")
    args = parser.parse_args(argv)
    fresh = compile_ptx(args.nvcc)
    shipped_path = CUDA_DIR / PTX_FILE
    shipped = shipped_path.read_bytes() if shipped_path.exists() else b""
    current = without_header_comments(fresh) == without_header_comments(shipped)
    if args.check:
        print(f"{shipped_path}: {'current' if current else 'OUT OF DATE'}")
        return 0 if current else 1
    atomic_write_bytes(shipped_path, fresh)
    print(f"wrote {shipped_path} ({len(fresh)} bytes; {' '.join(nvcc_command(PTX_FILE, args.nvcc))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
