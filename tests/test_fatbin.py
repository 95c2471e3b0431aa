"""The pure-Python fatbin reader, on ELF files assembled here byte by byte.

tests/test_testext.py checks the same reader against a real nvcc-built extension.
"""
import struct

import pytest

from dpdeploy.build.fatbin import Arch, FatbinError, compiled_archs, parse_fatbin
from dpdeploy.plan.archs import coverage_gaps


def fatbin(entries):
    """A fatbin: header + (kind, sm, payload) entries, each with a 64-byte entry header."""
    body = b""
    for kind, sm, payload in entries:
        padded = payload + b"\0" * (-len(payload) % 8)
        head = struct.pack("<HHIQ", kind, 0x0101, 64, len(padded)).ljust(28, b"\0") + struct.pack("<I", sm)
        body += head.ljust(64, b"\0") + padded
    return struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(body)) + body


def elf(sections):
    """A minimal little-endian ELF64 with the given named sections."""
    names = b"\0" + b"".join(n.encode() + b"\0" for n in [".shstrtab", *sections])
    blobs = [names, *sections.values()]
    data = bytearray(64)
    offsets = []
    for blob in blobs:
        offsets.append(len(data))
        data += blob
    shoff = len(data)
    headers = [b"\0" * 64]
    name_off = 1
    for label, blob, off in zip([".shstrtab", *sections], blobs, offsets, strict=True):
        sh_type = 3 if label == ".shstrtab" else 1
        headers.append(struct.pack("<IIQQQQIIQQ", name_off, sh_type, 0, 0, off, len(blob), 0, 0, 1, 0))
        name_off += len(label) + 1
    data += b"".join(headers)
    data[:16] = b"\x7fELF\x02\x01\x01" + b"\0" * 9
    struct.pack_into("<Q", data, 0x28, shoff)
    struct.pack_into("<HHH", data, 0x3A, 64, len(headers), 1)
    return bytes(data)


def test_two_fatbins_with_cubins_and_ptx(tmp_path):
    one = fatbin([(2, 75, b"cubin75"), (2, 90, b"cubin90-longer"), (1, 90, b"ptx text")])
    two = fatbin([(2, 120, b"x" * 13)])
    so = tmp_path / "_C.so"
    so.write_bytes(elf({".text": b"\x90" * 32, ".nv_fatbin": one + b"\0" * 8 + two}))
    assert compiled_archs(so) == {Arch("sm", 75), Arch("sm", 90), Arch("ptx", 90), Arch("sm", 120)}
    assert [str(a) for a in sorted(compiled_archs(so))] == ["compute_90", "sm_75", "sm_90", "sm_120"]


def test_cpu_only_library_has_no_archs(tmp_path):
    so = tmp_path / "_C.so"
    so.write_bytes(elf({".text": b"\x90" * 16}))
    assert compiled_archs(so) == set()


def test_not_an_elf_is_an_error(tmp_path):
    bad = tmp_path / "x.so"
    bad.write_bytes(b"MZ not elf")
    with pytest.raises(FatbinError, match="not an ELF"):
        compiled_archs(bad)


def test_garbage_after_magic_stops_cleanly():
    assert parse_fatbin(struct.pack("<IHHQ", 0xBA55ED50, 1, 16, 64) + b"\xff" * 64) == set()


ARCHS = {Arch("sm", 80), Arch("sm", 90), Arch("ptx", 90)}


@pytest.mark.parametrize("arch_list, gpus, missing", [
    ("8.0;9.0+PTX", [], []),
    ("8.0;9.0+PTX", ["8.6", "9.0", "12.0"], []),      # 8.6 runs sm_80, 12.0 JITs compute_90
    ("7.5;9.0", [], ["sm_75"]),
    ("8.0;12.0+PTX", [], ["sm_120", "compute_120"]),
    ("9.0", ["7.5"], ["compute capability 7.5"]),
    ("", [], []),
])
def test_coverage_gaps(arch_list, gpus, missing):
    gaps = coverage_gaps(ARCHS, arch_list, gpus)
    assert len(gaps) == len(missing)
    for gap, word in zip(gaps, missing, strict=True):
        assert word in gap


def test_no_ptx_means_newer_major_is_not_covered():
    assert coverage_gaps({Arch("sm", 90)}, "9.0", ["10.0"])
