"""Regenerate the shipped logmel.ptx from logmel.cu:  python -m s2i_runtime.cuda.build_ptx [--check]

The one definition of the nvcc command line; the test that compares the shipped PTX with a fresh build
uses it too. nvcc runs in this package's directory with relative file names, so the output does not
depend on where the checkout lives.

nvcc writes its own release's PTX ISA into `.version` (9.0 for CUDA 13), which only a CUDA 13 driver
loads. The file then declares `plan.PTX_ISA` instead, and ptxas must assemble it as declared: ptxas
refuses any instruction or directive that the declared ISA does not have ("requires PTX ISA .version X
or later"), so a kernel change that needs a newer ISA fails here, not on a user's driver (docs/gpu.md).
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
from .plan import PTX_FILE, PTX_ISA, PTX_TARGET, SOURCE_FILE

CUDA_DIR = Path(__file__).resolve().parent
NVCC_FLAGS = ("-ptx", f"-arch=compute_{PTX_TARGET.removeprefix('sm_')}", "-O3", "-fmad=false")
_RELEASE = re.compile(r"^// Cuda compilation tools, release ([\d.]+), (V[\d.]+)", re.MULTILINE)
_VERSION = re.compile(rb"^\.version (\d+\.\d+)[ \t]*$", re.MULTILINE)
_TARGET = re.compile(rb"^\.target (\w+)[ \t]*$", re.MULTILINE)


def nvcc_command(output: str, nvcc: str = "nvcc") -> list[str]:
    return [nvcc, *NVCC_FLAGS, "-o", output, SOURCE_FILE]


def ptx_header(ptx: bytes) -> tuple[str, str]:
    """(PTX ISA, target) that a PTX file declares, e.g. ("8.0", "sm_75"); ValueError without them."""
    version, target = _VERSION.search(ptx), _TARGET.search(ptx)
    if version is None or target is None:
        raise ValueError("not PTX: no .version or .target directive")
    return version.group(1).decode(), target.group(1).decode()


def declare_isa(ptx: bytes, isa: str = PTX_ISA) -> bytes:
    """The same PTX declaring ISA `isa` (only sound when ptxas then assembles it: see the docstring)."""
    ptx_header(ptx)
    return _VERSION.sub(f".version {isa}".encode(), ptx, count=1)


def assemble(ptx: bytes, arch: str = PTX_TARGET, ptxas: str = "ptxas") -> str:
    """Run ptxas on `ptx` for `arch` as the driver's JIT would; its -v report, RuntimeError on refusal."""
    if shutil.which(ptxas) is None:
        raise FileNotFoundError(f"{ptxas} not found")
    with tempfile.TemporaryDirectory() as tmp:
        source, cubin = Path(tmp) / PTX_FILE, Path(tmp) / "logmel.cubin"
        source.write_bytes(ptx.rstrip(b"\0"))
        command = [ptxas, f"-arch={arch}", "-v", str(source), "-o", str(cubin)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"ptxas refused the PTX: {' '.join(command)}\n{result.stderr}")
        return result.stderr


def compile_ptx(nvcc: str = "nvcc", ptxas: str = "ptxas") -> bytes:
    """PTX of logmel.cu as this machine's nvcc builds it, declaring PTX_ISA and checked by ptxas.

    RuntimeError when nvcc fails or ptxas refuses the declared ISA.
    """
    if shutil.which(nvcc) is None:
        raise FileNotFoundError(f"{nvcc} not found")
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / PTX_FILE
        command = nvcc_command(str(output), nvcc)
        result = subprocess.run(command, cwd=CUDA_DIR, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"nvcc failed: {' '.join(command)}\n{result.stderr}")
        ptx = declare_isa(output.read_bytes())
    assemble(ptx, PTX_TARGET, ptxas)
    return ptx


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
    parser.add_argument("--ptxas", default="ptxas")
    args = parser.parse_args(argv)
    fresh = compile_ptx(args.nvcc, args.ptxas)
    shipped_path = CUDA_DIR / PTX_FILE
    shipped = shipped_path.read_bytes() if shipped_path.exists() else b""
    current = without_header_comments(fresh) == without_header_comments(shipped)
    if args.check:
        print(f"{shipped_path}: {'current' if current else 'OUT OF DATE'}")
        return 0 if current else 1
    atomic_write_bytes(shipped_path, fresh)
    print(f"wrote {shipped_path} ({len(fresh)} bytes; {' '.join(nvcc_command(PTX_FILE, args.nvcc))}; "
          f"declares PTX ISA {PTX_ISA}, assembled by ptxas for {PTX_TARGET})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
