#!/usr/bin/env python3
"""DDColor in the CPU runtimes ddcolor is compared with: PyTorch (f32), ONNX Runtime (f32),
OpenVINO at its default precision (bf16 on CPUs with AVX512_BF16 or AMX) and with f32 forced.
One JSON line per runtime: median and min ms, the precision it ran in, and how far its ab is
from PyTorch's f32 ab on the same input (max and mean |ab - ab_f32|).

Usage (the reference environment, see CONTRIBUTING.md):
    ~/refenv/bin/python benches/peers.py --encoder convnext-t --size 512 --threads 2 --runs 5 \
        [--weights CHECKPOINT.pth] [--only pytorch,onnxruntime,openvino,openvino-f32] \
        [--save-input X.f32]

Without --weights the weights are random (timing does not depend on them; agreement does: use
a realistic checkpoint from ../shared/reference/random_checkpoint.py). The input is a smooth
gray picture (seeded), replicated to RGB, in [0, 1]; --save-input writes it as raw
little-endian f32 [3, size, size] for `cargo run --release --example bf16_agreement`.
"""
import argparse, json, os, sys, tempfile, time

import numpy as np
import torch

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, '..', '..', 'shared', 'reference'))
import ddcolor_reference as r  # noqa: E402


def gray_input(size, seed=1):
    """A smooth random field (sum of low-frequency cosines), gray, in [0, 1]: [1, 3, size, size]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    g = np.zeros((size, size))
    for _ in range(12):
        fx, fy, ph = rng.uniform(0.5, 6), rng.uniform(0.5, 6), rng.uniform(0, 2 * np.pi)
        g += rng.uniform(0.2, 1) * np.cos(2 * np.pi * (fx * x + fy * y) + ph)
    g = (g - g.min()) / (g.max() - g.min())
    return np.repeat(g[None, None].astype(np.float32), 3, axis=1)


def timed(run, runs):
    for _ in range(2):
        run()
    ts = []
    for _ in range(runs):
        t = time.perf_counter(); run(); ts.append(time.perf_counter() - t)
    ts.sort()
    return round(ts[len(ts) // 2] * 1000, 2), round(ts[0] * 1000, 2)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--encoder', default='convnext-t', choices=['convnext-t', 'convnext-l'])
    p.add_argument('--size', type=int, default=512); p.add_argument('--threads', type=int, default=2)
    p.add_argument('--runs', type=int, default=5); p.add_argument('--weights')
    p.add_argument('--only', default='pytorch,onnxruntime,openvino,openvino-f32')
    p.add_argument('--save-input')
    a = p.parse_args()
    only = a.only.split(',')
    torch.set_num_threads(a.threads)
    m = r.build(a.encoder, a.size)
    if a.weights:
        sd = torch.load(a.weights, map_location='cpu', weights_only=True)
        m.load_state_dict(sd.get('params', sd), strict=False)
    m.eval()
    x = gray_input(a.size)
    if a.save_input:
        x[0].astype('<f4').tofile(a.save_input)
    xt = torch.from_numpy(x)
    with torch.inference_mode():
        ref = m(xt).numpy()
    common = {'encoder': a.encoder, 'size': a.size, 'batch': 1, 'threads': a.threads}

    def report(impl, precision, med_min, ab):
        d = np.abs(ab - ref)
        print(json.dumps({'impl': impl, **common, 'precision': precision, 'median_ms': med_min[0],
                          'min_ms': med_min[1], 'max_ab_diff': round(float(d.max()), 4),
                          'mean_ab_diff': round(float(d.mean()), 4)}), flush=True)

    if 'pytorch' in only:
        with torch.inference_mode():
            report('pytorch ' + torch.__version__, 'f32', timed(lambda: m(xt), a.runs), ref)
    onnx_path = None
    if any(e in only for e in ('onnxruntime', 'openvino', 'openvino-f32')):
        tmp = tempfile.mkdtemp(prefix='ddcolor-peers-')
        onnx_path = os.path.join(tmp, 'ddcolor.onnx')
        with torch.inference_mode():
            torch.onnx.export(m, xt, onnx_path, input_names=['x'], output_names=['ab'], opset_version=17,
                              dynamo=False)
    if 'onnxruntime' in only:
        import onnxruntime as ort
        so = ort.SessionOptions(); so.intra_op_num_threads = a.threads; so.inter_op_num_threads = 1
        s = ort.InferenceSession(onnx_path, so, providers=['CPUExecutionProvider'])
        out = s.run(None, {'x': x})[0]
        report('onnxruntime ' + ort.__version__, 'f32', timed(lambda: s.run(None, {'x': x}), a.runs), out)
    for name in ('openvino', 'openvino-f32'):
        if name not in only:
            continue
        import openvino as ov
        core = ov.Core()
        cfg = {'INFERENCE_NUM_THREADS': a.threads, 'NUM_STREAMS': 1, 'PERFORMANCE_HINT': 'LATENCY'}
        if name == 'openvino-f32':
            cfg['INFERENCE_PRECISION_HINT'] = 'f32'
        c = core.compile_model(onnx_path, 'CPU', cfg)
        prec = str(c.get_property('INFERENCE_PRECISION_HINT'))  # "<Type: 'bfloat16'>"
        prec = prec.split("'")[1] if "'" in prec else prec
        req = c.create_infer_request()
        out = req.infer({0: x})[c.output(0)]
        report(f'openvino {ov.__version__.split("-")[0]}' + (' (f32 forced)' if name.endswith('f32') else ' (default)'),
               prec, timed(lambda: req.infer({0: x}), a.runs), out)


if __name__ == '__main__':
    main()
