"""Peer speed anchors on this CPU (2 threads): torch AdamW, galore-torch GaLoreAdamW, fira
FiraAdamW and torch.linalg.svd on the LLaMA-shaped matrices of benches/step.rs.

    python3 -m venv .peervenv && .peervenv/bin/pip install -q torch galore-torch fira
    .peervenv/bin/python benches/peers/peer_speed.py
"""
import time, sys, torch
from galore_torch import GaLoreAdamW
from fira import FiraAdamW
torch.set_num_threads(2)
torch.manual_seed(0)

def bench(fn, reps):
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(reps): fn()
    return (time.perf_counter() - t) / reps * 1e3

for (m, n, r) in [(1376, 512, 128), (2736, 1024, 256), (5461, 2048, 512)]:
    W = torch.nn.Parameter(torch.randn(m, n) * 0.02)
    G = torch.randn(m, n)
    def mk(opt):
        def f():
            W.grad = G; opt.step()
        return f
    adam = torch.optim.AdamW([W], lr=1e-3)
    t_adam = bench(mk(adam), 20)
    gal = GaLoreAdamW([{"params": [W], "rank": r, "update_proj_gap": 10**9, "scale": 0.25, "proj_type": "std"}], lr=1e-3)
    t_gal = bench(mk(gal), 20)   # projection-only steps (SVD done once in warm-up)
    fir = FiraAdamW([{"params": [W], "rank": r, "update_proj_gap": 10**9, "alpha": 0.25, "proj_type": "std"}], lr=1e-3)
    t_fir = bench(mk(fir), 20)
    t_svd = bench(lambda: torch.linalg.svd(G, full_matrices=False), 3)
    amort = t_gal + t_svd / 200
    print(f"{m}x{n} r{r}: AdamW {t_adam:.1f} ms | GaLore step {t_gal:.1f} ms | Fira step {t_fir:.1f} ms | SVD refresh {t_svd:.0f} ms | GaLore amortized T=200 {amort:.1f} ms = {amort/t_adam:.2f}x AdamW")
    sys.stdout.flush()
