#!/usr/bin/env python3
"""A synthetic album for the benchmarks: COUNT distinct 8-bit gray PNGs of SIDE pixels under
DIR, 1000 per subfolder (DIR/000/img000000.png, ...), written by Python's standard library alone.

    benches/make-album.py DIR COUNT SIDE
"""
import os
import struct
import sys
import zlib


def chunk(t, b):
    return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b) & 0xFFFFFFFF)


def main():
    d, n, side = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    os.makedirs(d, exist_ok=True)
    for i in range(n):
        px = bytearray(((x * 3 + y * 5 + i) % 256) for y in range(side) for x in range(side))
        px[:4] = i.to_bytes(4, "little")  # every file distinct
        rows = b"".join(b"\0" + bytes(px[y * side:(y + 1) * side]) for y in range(side))
        png = (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b"")
        )
        sub = os.path.join(d, f"{i // 1000:03d}")
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"img{i:06d}.png"), "wb") as f:
            f.write(png)


if __name__ == "__main__":
    main()
