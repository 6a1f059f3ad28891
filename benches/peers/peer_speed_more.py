"""Peer speed anchors not covered by benches/peers/peer_speed.py: apollo-torch 1.0.3's
APOLLOAdamW (APOLLO and APOLLO-Mini) and ista-daslab-optimizers 1.1.15's DCTAdamW, on this
CPU with 2 threads, on the same LLaMA-shaped matrices as benches/step.rs. Projection-only steps
(refresh gap 10^9, the projection is set up in warm-up), except DCT-AdamW's published default
(reselect every step), timed separately.

    .peervenv/bin/pip install apollo-torch
    .peervenv/bin/pip install --no-deps ista-daslab-optimizers==1.1.15
    .peervenv/bin/python benches/peers/peer_speed_more.py
"""
import contextlib
import importlib
import importlib.util
import io
import os
import sys
import time
import types

import torch
from apollo_torch import APOLLOAdamW

torch.set_num_threads(2)
torch.manual_seed(0)


def dct_adamw_class():
    spec = importlib.util.find_spec("ista_daslab_optimizers")
    package = types.ModuleType("ista_daslab_optimizers")
    package.__path__ = [os.path.dirname(spec.origin)]
    sys.modules["ista_daslab_optimizers"] = package
    return importlib.import_module("ista_daslab_optimizers.fft_low_rank.dct_adamw").DCTAdamW


DCTAdamW = dct_adamw_class()


def bench(fn, reps):
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps * 1e3


for (m, n, r) in [(1376, 512, 128), (2736, 1024, 256)]:
    W = torch.nn.Parameter(torch.randn(m, n) * 0.02)
    G = torch.randn(m, n)

    def mk(opt):
        def f():
            W.grad = G.clone()
            with contextlib.redirect_stdout(io.StringIO()):
                opt.step()
        return f

    apollo = APOLLOAdamW([{"params": [W], "rank": r, "proj": "random", "scale_type": "channel",
                           "scale": 1, "update_proj_gap": 10**9, "proj_type": "std"}], lr=1e-3)
    t_apollo = bench(mk(apollo), 20)
    mini = APOLLOAdamW([{"params": [W], "rank": 1, "proj": "random", "scale_type": "tensor",
                         "scale": 128, "update_proj_gap": 10**9, "proj_type": "std"}], lr=1e-3)
    t_mini = bench(mk(mini), 20)
    dct = DCTAdamW([W], lr=1e-3, weight_decay=0.0, rank=r, proj="dct", update_proj_gap=10**9,
                   sim_type="matmul", ell_norm=1)
    t_dct = bench(mk(dct), 20)
    dct_every = DCTAdamW([W], lr=1e-3, weight_decay=0.0, rank=r, proj="dct", update_proj_gap=1,
                         sim_type="matmul", ell_norm=1)
    t_dct_every = bench(mk(dct_every), 10)
    print(f"{m}x{n} r{r}: APOLLO {t_apollo:.1f} ms | APOLLO-Mini {t_mini:.1f} ms | "
          f"DCT-AdamW {t_dct:.1f} ms | DCT-AdamW reselect every step {t_dct_every:.1f} ms")
    sys.stdout.flush()
