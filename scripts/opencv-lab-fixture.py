#!/usr/bin/env python3
"""Write tests/data/opencv-lab.txt: sRGB colours and what OpenCV's float cvtColor(RGB2Lab)
makes of them (the interpolated-table path that `--compat upstream` reproduces), for the test
in tests/pipeline.rs. Needs opencv-python (the reference environment, ~/refenv).

    ~/refenv/bin/python scripts/opencv-lab-fixture.py
"""
import os
import cv2
import numpy as np

rng = np.random.default_rng(20261202)
colours = [rng.random(3, dtype=np.float32) for _ in range(600)]
# grays, the cube's corners and edges, values on and just off the table's grid
for v in np.linspace(0, 1, 257, dtype=np.float32):
    colours.append(np.array([v, v, v], dtype=np.float32))
for v in [0.0, 1 / 32, 0.5, 31 / 32, 1.0, 1e-4, 0.9999]:
    colours.append(np.array([v, 1 - v, 0.25], dtype=np.float32))
rgb = np.stack(colours).reshape(1, -1, 3).astype(np.float32)
lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)
out = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "opencv-lab.txt")
with open(out, "w") as f:
    f.write(f"# r g b -> L a b: cv2.cvtColor(float32, COLOR_RGB2Lab), OpenCV {cv2.__version__}\n")
    for c, l in zip(rgb[0], lab[0]):
        f.write(" ".join(repr(float(x)) for x in (*c, *l)) + "\n")
print(out, len(colours), "colours, OpenCV", cv2.__version__)

# what OpenCV's imread (IMREAD_COLOR: libjpeg-turbo, EXIF orientation applied) gives for the
# sample JPEGs: SHA-256 of the RGB bytes, for `--compat upstream`'s JPEG decoding
import hashlib
photos = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "fixtures", "photos")
out = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "opencv-imread.txt")
with open(out, "w") as f:
    f.write(f"# file width height sha256(RGB bytes of cv2.imread), OpenCV {cv2.__version__}\n")
    for name in sorted(os.listdir(photos)):
        if name.lower().endswith((".jpg", ".jpeg")):
            img = cv2.imread(os.path.join(photos, name))[:, :, ::-1]
            digest = hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest()
            f.write(f"{name} {img.shape[1]} {img.shape[0]} {digest}\n")
print(out)

# what cv2.resize(float32, INTER_LINEAR) gives (the wheels' IPP path) for generated images at
# model sizes: SHA-256 of the little-endian float32 result, for resize_interleaved_ipp
def pattern(w, h):
    y, x, c = np.meshgrid(np.arange(h), np.arange(w), np.arange(3), indexing="ij")
    k = (x * 7919 + y * 104729 + c * 31) % 1000
    return k.astype(np.float32) / np.float32(999)

out = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "opencv-resize.txt")
with open(out, "w") as f:
    f.write(f"# w h -> w2 h2 sha256(float32 LE of cv2.resize INTER_LINEAR), OpenCV {cv2.__version__}\n")
    for w, h, w2, h2 in [(451, 300, 512, 512), (1000, 700, 256, 256), (640, 480, 512, 512)]:
        small = cv2.resize(pattern(w, h), (w2, h2), interpolation=cv2.INTER_LINEAR)
        digest = hashlib.sha256(small.astype("<f4").tobytes()).hexdigest()
        f.write(f"{w} {h} {w2} {h2} {digest}\n")
print(out)

# float Lab2RGB (its spline-interpolated sRGB curve): the model input's gray, and colours
out = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "opencv-lab2rgb.txt")
labs = [(l, 0.0, 0.0) for l in np.linspace(0, 100, 1001, dtype=np.float32)]
labs += [(rng.random() * 100, rng.random() * 160 - 80, rng.random() * 160 - 80) for _ in range(400)]
lab = np.array(labs, dtype=np.float32).reshape(1, -1, 3)
rgb = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)
with open(out, "w") as f:
    f.write(f"# L a b -> r g b: cv2.cvtColor(float32, COLOR_Lab2RGB), OpenCV {cv2.__version__}\n")
    for c, l in zip(lab[0], rgb[0]):
        f.write(" ".join(repr(float(x)) for x in (*c, *l)) + "\n")
print(out)
