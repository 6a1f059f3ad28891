"""torch AdamW and galore-torch's GaLoreAdamW on CUDA, on the LLaMA-shaped matrices of
benches/step.rs: the PyTorch side of benches/gpu.sh. Prints a markdown table.

    pip install torch galore-torch
    python3 benches/peers/gpu_peers.py [--quick]
"""
import sys
import time

import torch
from galore_torch import GaLoreAdamW

quick = "--quick" in sys.argv
device = torch.device("cuda")
torch.manual_seed(0)
shapes = [(1376, 512, 128)] if quick else [(1376, 512, 128), (2736, 1024, 256), (5461, 2048, 512)]
reps = 5 if quick else 50


def bench(fn):
    fn()  # warm-up (GaLore computes its projector here)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / reps * 1e3


print("| shape (PyTorch [out, in]) | rank | torch AdamW | GaLoreAdamW (between refreshes) | ratio | SVD refresh |")
print("|---|---|---|---|---|---|")
for m, n, r in shapes:
    w = torch.nn.Parameter(torch.randn(m, n, device=device) * 0.02)
    g = torch.randn(m, n, device=device)

    def stepper(optim):
        def step():
            w.grad = g
            optim.step()
        return step

    adam = bench(stepper(torch.optim.AdamW([w], lr=1e-3)))
    group = {"params": [w], "rank": r, "update_proj_gap": 10**9, "scale": 0.25, "proj_type": "std"}
    galore = bench(stepper(GaLoreAdamW([group], lr=1e-3)))
    svd = bench(lambda: torch.linalg.svd(g, full_matrices=False))
    print(f"| {m}x{n} | {r} | {adam:.3f} ms | {galore:.3f} ms | {galore / adam:.2f}x | {svd:.2f} ms |")
