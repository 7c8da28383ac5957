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
