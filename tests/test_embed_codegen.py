"""The embedder's compiled kernels, read from the extension's machine code: none reaches
memory by gather or scatter. LLVM once vectorised the AVX-512 attention across a block's
queries instead of its lanes and reached the accumulators by 64 `vgatherqps`/`vscatterqps`,
62% of a 63-token pass on an AMD Zen 5 (performance.md, "AVX-512 on AMD Zen 5"). The
extension holds every ISA level's copy of a kernel, so this reads the AVX-512 ones on any
x86-64 CPU, AVX2-only included."""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from routeguard import _core

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="reads x86-64 machine code")

_FUNCTION = re.compile(r"^[0-9a-f]+ <(.+)>:$")
_SPREAD = re.compile(r"\bv(?:p)?(?:gather|scatter)\w*")


def _embed_kernels() -> dict[str, list[str]]:
    """Each ``_core::embed::`` function of the extension: its gather and scatter
    instructions."""
    objdump = shutil.which("objdump")
    assert objdump is not None, "objdump (binutils, beside the linker the build uses) is missing"
    so = Path(_core.__file__)
    text = subprocess.run(
        [objdump, "-C", "-d", "--no-show-raw-insn", str(so)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    found: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        head = _FUNCTION.match(line)
        if head is not None:
            name = head.group(1)
            current = name if name.startswith("_core::embed::") else None
            if current is not None:
                found.setdefault(current, [])
        elif current is not None and (hit := _SPREAD.search(line)):
            found[current].append(hit.group(0))
    return found


def test_no_embed_kernel_gathers_or_scatters() -> None:
    kernels = _embed_kernels()
    # The kernels are there to be read (a rename would otherwise pass this vacuously).
    for name in ("_core::embed::ops::attention::avx512", "_core::embed::ops::attention::avx2"):
        assert name in kernels, f"{name} not found in the extension's symbols"
    spread = {name: sorted(set(ops)) for name, ops in kernels.items() if ops}
    assert not spread, f"gathers/scatters in the embedder's kernels: {spread}"
