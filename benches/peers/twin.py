"""Twin runs: the published PyTorch optimizers trained from exactly where our runs started.

    cargo run --release --bin pretrain_llama -- --steps 400 --eval-every 50 \\
        --update-proj-gap 50 --out results/twin --export-twin results/twin/start
    python benches/peers/twin.py results/twin/start          # every exported recipe it knows
    cargo run --release --bin pretrain_llama -- --steps 400 --eval-every 50 \\
        --update-proj-gap 50 --out results/twin --report-only --twins results/twin/start

Each `<dir>/<recipe>/` holds `init.safetensors` and `twin.json` (see the example's twin.rs).
This script builds the same LLaMA (interleaved-pair RoPE as Burn's `RotaryEncoding`, RmsNorm
with `gamma`, SwiGLU, untied head, byte vocabulary), loads those weights (Burn's `Linear` is
`[d_in, d_out]`: transposed here), feeds the same windows with the same per-step learning rate
and global-norm clipping, and writes `<dir>/<recipe>/history.csv` in the example's format.

Needs torch, galore-torch, fira, apollo-torch and ista-daslab-optimizers (installed with
--no-deps: its package __init__ wants CUDA extensions, so only its DCT-AdamW module is loaded).
Optimizers, as each reference's own training script builds them:
  adamw        torch.optim.AdamW on every parameter
  galore       galore_torch.GaLoreAdamW, attention/MLP matrices in a GaLore group
  fira         fira.FiraAdamW, the same groups
  apollo(-mini) apollo_torch.APOLLOAdamW, proj "random"
  dct-adamw    ista_daslab_optimizers DCTAdamW (proj "dct", sim_type "matmul", ell_norm 1) on the
               attention/MLP matrices, torch.optim.AdamW on the rest (as our recipe routes them)
galore-dct, frugal and switchlora have no packaged reference and are skipped.
`--dense torch` puts the non-projected parameters under torch.optim.AdamW instead of the
reference optimizer's own dense path (the HF convention), to measure that difference alone; it
writes history-dense-torch.csv. `--projection-seed K` shifts APOLLO's projection seeds
(history-seedK.csv), to measure the reference's own spread over random projections.
`--dct-order ascending` makes DCTAdamW keep its selected columns in ascending index order, as
ours does (the reference's `topk(sorted=False)` order is torch's implementation detail: on CPU
nth_element's order below 64 x k scores and score order above, on CUDA another), and
`--dct-phase ours` refreshes at 1-based steps 1, T + 1, 2T + 1, ... as ours (and galore-torch)
do instead of DCTAdamW's 1, T, 2T, ...; each writes history-<suffix>.csv, to measure
what each convention alone moves.
"""
import argparse
import contextlib
import importlib
import importlib.util
import io
import json
import math
import os
import sys
import time
import tomllib
import types

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file


class RmsNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x / torch.sqrt(x.square().mean(-1, keepdim=True) + self.eps) * self.gamma


def linear(i, o):
    return nn.Linear(i, o, bias=False)


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.wq, self.wk, self.wv, self.wo = (linear(d, d) for _ in range(4))
        self.heads = heads


class FeedForward(nn.Module):
    def __init__(self, d, ffn):
        super().__init__()
        self.w1, self.w2, self.w3 = linear(d, ffn), linear(ffn, d), linear(d, ffn)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention_norm = RmsNorm(c["d_model"], c["norm_epsilon"])
        self.attention = Attention(c["d_model"], c["heads"])
        self.ffn_norm = RmsNorm(c["d_model"], c["norm_epsilon"])
        self.feed_forward = FeedForward(c["d_model"], c["ffn"])


class Llama(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, heads = c["d_model"], c["heads"]
        self.tok_embeddings = nn.Embedding(c["vocab"], d)
        self.layers = nn.ModuleList(Block(c) for _ in range(c["layers"]))
        self.norm = RmsNorm(d, c["norm_epsilon"])
        self.output = linear(d, c["vocab"])
        head = d // heads
        # Burn: theta_i = 1 / exp(2i / head * ln(base)), pairs (x[2i], x[2i+1]) rotated.
        exponent = torch.arange(0, head, 2, dtype=torch.float32) / head
        theta = torch.exp(exponent * math.log(c["rope_theta"])).reciprocal()
        angles = torch.arange(c["seq_len"], dtype=torch.float32)[:, None] * theta[None, :]
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def rope(self, x):
        seq = x.shape[-2]
        a, b = x[..., 0::2], x[..., 1::2]
        cos, sin = self.cos[:seq], self.sin[:seq]
        return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)

    def forward(self, tokens):
        batch, seq = tokens.shape
        mask = torch.ones(seq, seq, dtype=torch.bool).triu(1)
        x = self.tok_embeddings(tokens)
        for block in self.layers:
            att = block.attention
            h = block.attention_norm(x)
            d = h.shape[-1]
            split = lambda t: t.reshape(batch, seq, att.heads, d // att.heads).transpose(1, 2)
            q, k, v = self.rope(split(att.wq(h))), self.rope(split(att.wk(h))), split(att.wv(h))
            scores = (q @ k.transpose(2, 3)) / math.sqrt(d // att.heads)
            context = scores.masked_fill(mask, float("-inf")).softmax(-1) @ v
            x = x + att.wo(context.transpose(1, 2).reshape(batch, seq, d))
            x = x + block.feed_forward(block.ffn_norm(x))
        return self.output(self.norm(x))

    def loss(self, tokens):
        logits = self.forward(tokens[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


def load_weights(model, path):
    saved = load_file(path)
    names = set()
    for name, param in model.named_parameters():
        if name not in saved:
            sys.exit(f"{path}: no tensor {name}")
        value = saved[name]
        if name.endswith(".weight") and name != "tok_embeddings.weight":
            value = value.T  # Burn's Linear is [d_in, d_out]
        if value.shape != param.shape:
            sys.exit(f"{path}: {name} is {tuple(value.shape)}, the model wants {tuple(param.shape)}")
        param.data.copy_(value)
        names.add(name)
    extra = set(saved) - names
    if extra:
        sys.exit(f"{path}: tensors the model does not have: {sorted(extra)}")


def is_projected(name):
    """Our `Router::llama()`: attention and MLP matrices; embeddings, norms and head dense."""
    return ".attention.w" in name or ".feed_forward.w" in name


class AscendingTopk:
    """`torch` as the DCT projector sees it, with `topk`'s indices in ascending order."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def topk(input, k, sorted=True):
        indices = torch.topk(input, k, sorted=sorted).indices.sort().values
        return types.SimpleNamespace(indices=indices, values=input[indices])


def load_dct_adamw(order="reference", phase="reference"):
    """DCTAdamW, with its column order and refresh phase as the reference has them or as ours."""
    base = import_dct_adamw()
    projector = importlib.import_module("ista_daslab_optimizers.fft_low_rank.fft_projector")
    projector.torch = AscendingTopk() if order == "ascending" else torch
    if phase == "reference":
        return base

    class OurPhase(base):
        def should_update_projection(self):
            # 1-based step s refreshes when s - 1 is a multiple of the gap (0-based 0, T, 2T, ...).
            return (self.steps - 1) % self.update_proj_gap == 0

    return OurPhase


def import_dct_adamw():
    if "ista_daslab_optimizers" not in sys.modules:
        spec = importlib.util.find_spec("ista_daslab_optimizers")
        package = types.ModuleType("ista_daslab_optimizers")
        package.__path__ = [os.path.dirname(spec.origin)]
        sys.modules["ista_daslab_optimizers"] = package
    return importlib.import_module("ista_daslab_optimizers.fft_low_rank.dct_adamw").DCTAdamW


class Quiet:
    """Runs an optimizer's step with its prints swallowed (DCTAdamW prints per step)."""

    def __init__(self, *optimizers):
        self.optimizers = optimizers
        self.param_groups = [g for o in optimizers for g in o.param_groups]

    def step(self):
        with contextlib.redirect_stdout(io.StringIO()):
            for o in self.optimizers:
                o.step()

    def zero_grad(self):
        for o in self.optimizers:
            o.zero_grad(set_to_none=True)


def build_optimizer(model, start, options):
    """The reference optimizer of `start`'s recipe, with the conventions `options` changes."""
    recipe = tomllib.loads(start["recipe_toml"])
    kind = recipe["optimizer"]
    table = dict(recipe.get(kind, {}))
    table.update(start["subspace_keys"])
    dense_table = recipe.get("dense", {})
    named = list(model.named_parameters())
    projected = [p for n, p in named if is_projected(n)]
    dense = [p for n, p in named if not is_projected(n)]

    def adam_args(t, eps_default):
        return dict(betas=(t.get("beta_1", 0.9), t.get("beta_2", 0.999)),
                    eps=t.get("epsilon", eps_default), weight_decay=t.get("weight_decay", 0.0))

    def torch_adamw(params):
        return torch.optim.AdamW(params, lr=recipe["lr"], **adam_args(dense_table, 1e-8))

    name = start["recipe"]
    if kind == "adamw":
        return torch_adamw([p for _, p in named]), "torch.optim.AdamW"
    if kind == "galore" and table.get("projection", "svd") == "svd":
        from galore_torch import GaLoreAdamW as Reference
        group = dict(rank=table["rank"], update_proj_gap=table["update_proj_gap"],
                     scale=table.get("scale", 0.25), proj_type=table.get("proj_type", "std"))
        label, extra = "galore_torch.GaLoreAdamW", dict(no_deprecation_warning=True)
    elif kind == "fira":
        from fira import FiraAdamW as Reference
        group = dict(rank=table["rank"], update_proj_gap=table["update_proj_gap"],
                     alpha=table.get("scale", 0.25), proj_type=table.get("proj_type", "std"))
        label, extra = "fira.FiraAdamW", {}
    elif kind == "apollo" and table.get("projection") == "gaussian":
        from apollo_torch import APOLLOAdamW as Reference
        group = dict(rank=table["rank"], proj="random", scale_type=table.get("scaling", "channel"),
                     scale=table.get("scale", 1.0), update_proj_gap=table["update_proj_gap"],
                     proj_type=table.get("proj_type", "std"))
        label, extra = "apollo_torch.APOLLOAdamW", {}
    elif kind == "frugal" and table.get("projection") == "dct" and table.get("residual") == "none":
        DCTAdamW = load_dct_adamw(options.dct_order, options.dct_phase)
        t = adam_args(table, 1e-8)
        low = DCTAdamW(projected, lr=recipe["lr"], weight_decay=t["weight_decay"],
                       rank=table["rank"], proj="dct", update_proj_gap=table["update_proj_gap"],
                       sim_type="matmul", ell_norm=1, betas=t["betas"], eps=t["eps"])
        return Quiet(low, torch_adamw(dense)), "ista_daslab_optimizers DCTAdamW + torch AdamW"
    else:
        return None, f"no packaged reference for {name}"
    t = adam_args(table, 1e-6)
    if options.dense == "torch":
        low = Reference([dict(params=projected, **group)], lr=recipe["lr"], **t, **extra)
        return Quiet(low, torch_adamw(dense)), label + " + torch AdamW (dense)"
    groups = [dict(params=dense), dict(params=projected, **group)]
    return Reference(groups, lr=recipe["lr"], **t, **extra), label


def validation_windows(tokens, seq_len):
    """The example's validation: consecutive windows of seq_len + 1 overlapping by one."""
    out, start = [], 0
    while start + 1 < len(tokens):
        out.append(tokens[start:start + seq_len + 1])
        start += seq_len
    return out


@torch.no_grad()
def validation_loss(model, windows, batch):
    total, count = 0.0, 0
    full = [w for w in windows if len(w) == len(windows[0])]
    tail = [w for w in windows if len(w) != len(windows[0])]
    chunks = [full[i:i + batch] for i in range(0, len(full), batch)] + [[w] for w in tail]
    for chunk in chunks:
        tokens = torch.tensor(chunk, dtype=torch.long)
        predicted = tokens.shape[0] * (tokens.shape[1] - 1)
        total += model.loss(tokens).item() * predicted
        count += predicted
    return total / count


def variant_suffix(options, is_dct):
    """The file-name suffix of a run with changed conventions ("" for the reference as it is)."""
    suffix = "-dense-torch" if options.dense == "torch" else ""
    suffix += f"-seed{options.projection_seed}" if options.projection_seed else ""
    suffix += "-dct-ascending" if is_dct and options.dct_order == "ascending" else ""
    suffix += "-dct-phase-ours" if is_dct and options.dct_phase == "ours" else ""
    return suffix


def run(folder, options):
    with open(os.path.join(folder, "twin.json")) as f:
        start = json.load(f)
    torch.manual_seed(0)  # only APOLLO's projections draw from torch's generator (seeded per param)
    model = Llama(start)
    load_weights(model, os.path.join(folder, "init.safetensors"))
    optimizer, label = build_optimizer(model, start, options)
    if optimizer is None:
        print(f"{start['recipe']}: skipped ({label})")
        return
    if options.projection_seed:
        # APOLLO seeds each matrix's projections with its parameter index: shift them all, to see
        # how far the reference itself moves with other random projections.
        for state in getattr(optimizer, "state", {}).values():
            if "seed" in state:
                state["seed"] += options.projection_seed
    with open(start["data"], "rb") as f:
        tokens = list(f.read())
    train, validation = tokens[:start["train_tokens"]], tokens[start["train_tokens"]:]
    windows = validation_windows(validation, start["seq_len"])
    seq, batch, accum = start["seq_len"], start["batch_size"], start["grad_accum"]
    params = [p for p in model.parameters()]
    history = [(0, None, validation_loss(model, windows, batch))]
    began = time.time()
    for step in range(start["steps"]):
        for group in optimizer.param_groups:
            group["lr"] = start["lr"][step]
        optimizer.zero_grad()
        starts = start["starts"][step]
        loss_sum = 0.0
        for micro in range(accum):
            rows = [train[s:s + seq + 1] for s in starts[micro * batch:(micro + 1) * batch]]
            loss = model.loss(torch.tensor(rows, dtype=torch.long))
            loss_sum += loss.item()
            (loss / accum).backward()
        if start["clip"] > 0:
            torch.nn.utils.clip_grad_norm_(params, start["clip"])
        optimizer.step()
        done = step + 1
        val = None
        if done % start["eval_every"] == 0 or done == start["steps"]:
            val = validation_loss(model, windows, batch)
            print(f"{start['recipe']:>12} (PyTorch) step {done:>5}: validation perplexity "
                  f"{math.exp(val):.2f}", flush=True)
        history.append((done, loss_sum / accum, val))
    suffix = variant_suffix(options, is_dct="DCTAdamW" in label)
    path = os.path.join(folder, f"history{suffix}.csv")
    with open(path, "w") as f:
        f.write("optimizer,step,train_loss,validation_loss,validation_perplexity\n")
        for step, loss, val in history[1:]:
            v, p = ("", "") if val is None else (f"{val:.5f}", f"{math.exp(val):.3f}")
            f.write(f"{start['recipe']},{step},{loss:.7f},{v},{p}\n")
    with open(os.path.join(folder, f"twin_summary{suffix}.json"), "w") as f:
        json.dump(dict(recipe=start["recipe"], optimizer=label, dense=options.dense,
                       initial_validation_loss=history[0][2], seconds=time.time() - began), f)
    print(f"{start['recipe']}: {label}, final validation perplexity "
          f"{math.exp(history[-1][2]):.2f}; wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dir", help="the --export-twin folder")
    parser.add_argument("--recipes", help="comma-separated recipe names (default: all exported)")
    parser.add_argument("--dense", choices=["reference", "torch"], default="reference")
    parser.add_argument("--projection-seed", type=int, default=0,
                        help="shift APOLLO's per-matrix projection seeds (writes history-seedK.csv)")
    parser.add_argument("--dct-order", choices=["reference", "ascending"], default="reference",
                        help="DCTAdamW's selected columns in topk's order, or ascending as ours")
    parser.add_argument("--dct-phase", choices=["reference", "ours"], default="reference",
                        help="DCTAdamW refreshes at 1-based steps 1, T, 2T, ... (reference) or 1, T + 1, "
                             "2T + 1, ... (ours)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.recipes.split(",") if args.recipes else sorted(
        n for n in os.listdir(args.dir) if os.path.exists(os.path.join(args.dir, n, "twin.json")))
    for name in names:
        run(os.path.join(args.dir, name), args)


if __name__ == "__main__":
    main()
