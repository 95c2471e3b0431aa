"""Read the GPU architectures compiled into a CUDA extension (``_C*.so``), in pure Python.

The PyPI CUDA wheels carry no ``cuobjdump``, so this reads the ELF ``.nv_fatbin`` section
directly. Layout (the fatbin format nvcc's ``fatbinary`` writes; field offsets as read by
cuobjdump-compatible tools and checked against nvcc 13.0 output in tests/test_fatbin.py):

    fatbin header (16 bytes): u32 magic 0xBA55ED50, u16 version, u16 header size, u64 payload size
    entry header: u16 kind (1 = PTX, 2 = ELF cubin), u16 version, u32 header size,
                  u64 padded payload size, ..., u32 sm version at offset 28 (e.g. 90)

Entries follow each other (next = start + header size + padded payload size); a section
holds one fatbin per CUDA translation unit. Which GPUs the archs cover: dpdeploy/plan/archs.py.
"""
from __future__ import annotations

import struct
from pathlib import Path

from dpdeploy.plan.archs import Arch

FATBIN_MAGIC = 0xBA55ED50
KIND_NAMES = {1: "ptx", 2: "sm"}


class FatbinError(ValueError):
    """The file is not an ELF shared object this reader understands."""


def _sections(data: bytes) -> dict[str, bytes]:
    """Section name -> contents of a little-endian ELF64 file."""
    if data[:4] != b"\x7fELF":
        raise FatbinError("not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise FatbinError("only little-endian ELF64 is supported")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = []
    for i in range(shnum):
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        headers.append((name, offset, size, _type))
    str_off, str_size = headers[shstrndx][1], headers[shstrndx][2]
    strtab = data[str_off:str_off + str_size]
    out = {}
    for name, offset, size, sh_type in headers:
        label = strtab[name:strtab.index(b"\0", name)].decode("ascii", "replace")
        out[label] = b"" if sh_type == 8 else data[offset:offset + size]  # SHT_NOBITS has no bytes
    return out


def parse_fatbin(blob: bytes) -> set[Arch]:
    """Every (kind, sm) entry of the fatbins found in ``blob``."""
    found: set[Arch] = set()
    magic = struct.pack("<I", FATBIN_MAGIC)
    pos = blob.find(magic)
    while pos != -1 and pos + 16 <= len(blob):
        _, _version, header_size, payload = struct.unpack_from("<IHHQ", blob, pos)
        entry, end = pos + header_size, min(len(blob), pos + header_size + payload)
        while entry + 32 <= end:
            kind, _v, entry_header, padded = struct.unpack_from("<HHIQ", blob, entry)
            sm, = struct.unpack_from("<I", blob, entry + 28)
            if kind not in KIND_NAMES or entry_header < 32:
                break
            found.add(Arch(KIND_NAMES[kind], sm))
            entry += entry_header + padded
        pos = blob.find(magic, max(end, pos + 4))
    return found


def compiled_archs(path: str | Path) -> set[Arch]:
    """The architectures in ``path``'s ``.nv_fatbin`` section (empty for a CPU-only build)."""
    data = Path(path).read_bytes()
    return parse_fatbin(_sections(data).get(".nv_fatbin", b""))
