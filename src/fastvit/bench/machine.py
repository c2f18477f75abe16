"""What the CPU in front of us is: its name and the ISA features that decide which runtime
and precision win on it (AVX-512, VNNI, bf16, AMX)."""

from __future__ import annotations

import platform

#: /proc/cpuinfo flag -> what it gives a runtime
ISA_FLAGS = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX-512 VNNI (int8 dot products)",
    "avx_vnni": "AVX-VNNI (int8 dot products)",
    "avx512_bf16": "AVX-512 BF16",
    "amx_tile": "AMX tiles",
    "amx_int8": "AMX-INT8",
    "amx_bf16": "AMX-BF16",
}


def _cpuinfo_field(name: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.split(":", 1)[0].strip() == name:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_isa() -> dict[str, bool]:
    """Which of :data:`ISA_FLAGS` this CPU reports (``{}`` without ``/proc/cpuinfo``)."""
    flags = _cpuinfo_field("flags")
    if flags is None:
        return {}
    present = set(flags.split())
    return {flag: flag in present for flag in ISA_FLAGS}


def isa_summary(isa: dict[str, bool] | None = None) -> str:
    """``AVX-512, AVX-512 VNNI (int8 dot products), ...; no AMX`` for reports."""
    isa = cpu_isa() if isa is None else isa
    if not isa:
        return "ISA features unknown (no /proc/cpuinfo)"
    have = [ISA_FLAGS[f] for f, on in isa.items() if on]
    line = ", ".join(have) if have else "none of AVX2/AVX-512/VNNI/BF16/AMX"
    if not any(isa.get(f) for f in ("amx_tile", "amx_int8", "amx_bf16")):
        line += "; no AMX"
    return line
