#!/usr/bin/env python3
"""What --dtype bf16 costs in colour, photo by photo: ΔE76 between the 8-bit outputs of f32 and
bf16 (both converted to Lab with OpenCV, D65), mean and 99.9th percentile per photo.

Usage (the reference environment, see CONTRIBUTING.md):
    ~/refenv/bin/python benches/bf16_delta_e.py F32_DIR BF16_DIR
where the two folders hold `ddcolor colorize` outputs of the same photos, e.g.
    ddcolor colorize ../shared/fixtures/photos -w CKPT.pth --device cpu --cache none -o F32_DIR
    ddcolor colorize ../shared/fixtures/photos -w CKPT.pth --device cpu --cache none --dtype bf16 -o BF16_DIR
Prints one JSON line per photo and a last line with the worst mean and 99.9th percentile.
"""
import json, os, sys

import cv2
import numpy as np


def lab(path):
    img = cv2.imread(path, cv2.IMREAD_COLOR)  # 8-bit BGR (16-bit outputs are read as 8-bit)
    return cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)


def main():
    a, b = sys.argv[1], sys.argv[2]
    worst_mean = worst_p = 0.0
    for root, _, files in os.walk(a):
        for f in sorted(files):
            pa = os.path.join(root, f)
            pb = os.path.join(b, os.path.relpath(pa, a))
            if not os.path.exists(pb) or cv2.imread(pa) is None:
                continue
            de = np.sqrt(((lab(pa) - lab(pb)) ** 2).sum(axis=2))
            mean, p999 = float(de.mean()), float(np.percentile(de, 99.9))
            worst_mean, worst_p = max(worst_mean, mean), max(worst_p, p999)
            print(json.dumps({'photo': os.path.relpath(pa, a), 'mean_de76': round(mean, 3),
                              'p99_9_de76': round(p999, 3), 'max_de76': round(float(de.max()), 2)}))
    print(json.dumps({'worst_mean_de76': round(worst_mean, 3), 'worst_p99_9_de76': round(worst_p, 3)}))


if __name__ == '__main__':
    main()
