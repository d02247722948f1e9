#!/usr/bin/env python3
"""Trains a tiny transformer language model with attnc's attention and with a
peer attention, from the same initial weights on the same batches, and prints
the two loss curves side by side.

The model: 2 pre-norm layers, width 128, 4 causal heads of 32, a GELU MLP of
width 512, learned position embeddings. The task: copying. Each sequence is
SEQ/2 random tokens followed by the same tokens again; the loss is the
next-token cross-entropy over the second half, which only attention back to
the first half can bring below log(VOCAB).

Variants (attnc against its peer):
  softmax   attnc.flex_attention with a causal BlockMask, against softmax
            attention written in PyTorch (masked scores -inf, einsum), or with
            --peer flex against PyTorch's FlexAttention (PyTorch 2.5+)
  softplus  examples/softplus.attn (P = normalize[n](softplus(S)), causal)
            through attnc.compile, against the same written in PyTorch
  sigmoid   examples/sigmoid.attn (P = sigmoid(S + bias), causal, bias =
            -log(context)) through attnc.compile, against the same in PyTorch

    PYTHONPATH=build/python python3 bench/train_tiny.py [--steps 200]
        [--batch 8] [--seq 32] [--variants softmax,softplus] [--peer torch]
        [--log-every 20] [--json FILE]

On the CPU, float32: the same loss curves within float32 rounding mean that
attnc's forward and backward are the peer's; test/python/test_training.py
runs a short comparison. With --device cuda the model trains on the GPU
under bfloat16 autocast (attention inputs bf16, float32 weights), attnc's
gradients from its GPU backward kernels; the curves then agree within
bfloat16 noise. A GPU machine without the attnc compiler loads the kernel
packages from a store made beforehand where attnc is built:

    PYTHONPATH=build/python python3 bench/train_tiny.py --prepare DIR \
        --seq 32 --variants softmax,sigmoid       # here: compiles packages
    ATTNC_PACKAGE_DIR=DIR python3 bench/train_tiny.py --device cuda \
        --seq 32 --variants softmax,sigmoid --peer flex   # there
"""

import argparse
import copy
import json
import math
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

VOCAB = 16
WIDTH = 128
HEADS = 4
LAYERS = 2


def _import_attnc():
    try:
        import attnc
    except ImportError:
        sys.path.insert(0, str(ROOT / "build" / "python"))
        import attnc
    return attnc


# ------------------------------------------------------------- attention

def causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


def torch_softmax_attention(q, k, v):
    """Causal softmax attention in plain PyTorch: q, k, v [B, H, T, D]."""
    import torch
    T, D = q.shape[2], q.shape[3]
    scores = torch.einsum("bhmd,bhnd->bhmn", q, k) / math.sqrt(D)
    keep = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    p = torch.softmax(scores.masked_fill(~keep, -math.inf), dim=-1)
    return torch.einsum("bhmn,bhnd->bhmd", p, v)


def sigmoid_bias(context):
    """Sigmoid attention's bias: -log(sequence length), as its paper
    recommends."""
    return -math.log(context)


def torch_sigmoid_attention(context):
    """Causal sigmoid attention in plain PyTorch: sigmoid(S + bias) on the
    kept keys, no normalisation."""
    import torch
    bias = sigmoid_bias(context)

    def attend(q, k, v):
        T, D = q.shape[2], q.shape[3]
        scores = torch.einsum("bhmd,bhnd->bhmn", q, k) / math.sqrt(D)
        keep = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
        p = torch.sigmoid(scores + bias) * keep
        return torch.einsum("bhmn,bhnd->bhmd", p, v)
    return attend


def torch_softplus_attention(q, k, v):
    """Causal softplus attention in plain PyTorch: each row of softplus(S)
    over the kept keys, divided by its sum."""
    import torch
    T, D = q.shape[2], q.shape[3]
    scores = torch.einsum("bhmd,bhnd->bhmn", q, k) / math.sqrt(D)
    keep = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    weights = torch.nn.functional.softplus(scores) * keep
    p = weights / weights.sum(dim=-1, keepdim=True)
    return torch.einsum("bhmn,bhnd->bhmd", p, v)


def pin_torch_threads(threads):
    """Sets PyTorch's intra-op thread count back to `threads` if something
    changed it. attnc's CPU launches (forward and adjoint) set the OpenMP
    thread count through the first omp_set_num_threads the process
    resolves, which in a PyTorch process is PyTorch's libgomp: unpinned,
    every attnc call resets PyTorch to all cores, which on a small, busy
    machine makes the PyTorch part of every step several times slower."""
    import torch
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def keeping_torch_threads(attend):
    """`attend`, pinning PyTorch's thread count (as it is now) after each
    call."""
    import torch
    threads = torch.get_num_threads()

    def attend_and_pin(q, k, v):
        try:
            return attend(q, k, v)
        finally:
            pin_torch_threads(threads)
    return attend_and_pin


# The kernels the variants compile: (target, dtype, head dim) of the run.
_TARGET = {"target": "cpu", "dtype": "f32", "head_dim": WIDTH // HEADS}


def attnc_softmax_attention(seq):
    attnc = _import_attnc()
    mask = attnc.create_block_mask(causal, None, None, seq, seq)

    def attend(q, k, v):
        return attnc.flex_attention(q, k, v, block_mask=mask)
    return keeping_torch_threads(attend)


def compile_example(name):
    """examples/<name>.attn compiled for the run's target and dtype (a GPU
    target's packages, forward and gradient, from the package store)."""
    attnc = _import_attnc()
    target = _TARGET["target"]
    shapes = None if target == "cpu" else {"D": _TARGET["head_dim"]}
    return attnc.compile(ROOT / "examples" / (name + ".attn"), target=target,
                         dtype=_TARGET["dtype"], shapes=shapes, grad=True)


def attnc_softplus_attention():
    kernel = compile_example("softplus")

    def attend(q, k, v):
        return kernel(q, k, v)
    return keeping_torch_threads(attend)


def attnc_sigmoid_attention(context):
    kernel = compile_example("sigmoid")
    bias = sigmoid_bias(context)

    def attend(q, k, v):
        return kernel(q, k, v, bias=bias)
    return keeping_torch_threads(attend)


def prepare_packages(variants, target):
    """Compiles the GPU packages (forward and gradient) the variants load
    with --device cuda into the package store ($ATTNC_PACKAGE_DIR)."""
    attnc = _import_attnc()
    _TARGET.update(target=target, dtype="bf16")
    for variant in variants:
        if variant == "softmax":
            attnc._flex.prepare(
                mask_mod=causal, dtype="bf16", target=target,
                head_dim=_TARGET["head_dim"], grad=True)
        else:
            compile_example(variant)
        print("%s: %s packages ready" % (variant, target))


def flex_softmax_attention(seq, device):
    """PyTorch's FlexAttention (torch.nn.attention.flex_attention) with the
    same mask_mod."""
    try:
        from torch.nn.attention.flex_attention import (create_block_mask,
                                                       flex_attention)
    except ImportError:
        import torch
        raise SystemExit("--peer flex needs PyTorch's FlexAttention "
                         "(PyTorch 2.5 or later); this is PyTorch %s" %
                         torch.__version__)
    mask = create_block_mask(causal, None, None, seq, seq, device=device)

    def attend(q, k, v):
        return flex_attention(q, k, v, block_mask=mask)
    return attend


# ----------------------------------------------------------------- model

def make_model(attend, seq, seed):
    """The tiny language model with attention `attend(q, k, v)`; weights
    drawn from `seed`."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1 = nn.LayerNorm(WIDTH)
            self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
            self.proj = nn.Linear(WIDTH, WIDTH)
            self.norm2 = nn.LayerNorm(WIDTH)
            self.mlp = nn.Sequential(nn.Linear(WIDTH, 4 * WIDTH), nn.GELU(),
                                     nn.Linear(4 * WIDTH, WIDTH))

        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = self.qkv(self.norm1(x)).split(WIDTH, dim=-1)
            q, k, v = (t.reshape(B, T, HEADS, WIDTH // HEADS).transpose(1, 2)
                       for t in (q, k, v))
            y = attend(q, k, v).transpose(1, 2).reshape(B, T, WIDTH)
            x = x + self.proj(y)
            return x + self.mlp(self.norm2(x))

    class TinyLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(VOCAB, WIDTH)
            self.position = nn.Parameter(torch.randn(seq, WIDTH) * 0.02)
            self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
            self.norm = nn.LayerNorm(WIDTH)
            self.head = nn.Linear(WIDTH, VOCAB)

        def forward(self, tokens):
            x = self.embed(tokens) + self.position[:tokens.shape[1]]
            for block in self.blocks:
                x = block(x)
            return self.head(self.norm(x))

    torch.manual_seed(seed)
    model = TinyLM()
    with torch.no_grad():  # GPT-2's initialisation of the embeddings
        model.embed.weight.normal_(0.0, 0.02)
    return model


def copy_batches(steps, batch, seq, seed):
    """`steps` batches [batch, seq] of the copying task (int64)."""
    import torch
    generator = torch.Generator().manual_seed(seed)
    half = seq // 2
    first = torch.randint(0, VOCAB, (steps, batch, half), generator=generator)
    return torch.cat([first, first], dim=2)


def train(model, batches, lr, log_every, autocast=False):
    """Adam on the copying loss; returns [(step, loss)] every `log_every`
    steps and at the last, and the seconds it took. With `autocast`, the
    steps run under CUDA bfloat16 autocast."""
    import contextlib
    import torch
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    half = batches.shape[2] // 2
    threads = torch.get_num_threads()
    curve = []
    start = time.perf_counter()
    for step, tokens in enumerate(batches):
        pin_torch_threads(threads)
        with (torch.autocast("cuda", dtype=torch.bfloat16) if autocast
              else contextlib.nullcontext()):
            logits = model(tokens[:, :-1])
        # Predictions of the second half: positions half-1 .. seq-2.
        loss = torch.nn.functional.cross_entropy(
            logits[:, half - 1:].float().reshape(-1, VOCAB),
            tokens[:, half:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        pin_torch_threads(threads)
        optimizer.step()
        if step % log_every == 0 or step == len(batches) - 1:
            curve.append((step, float(loss)))
    if batches.is_cuda:
        torch.cuda.synchronize()
    return curve, time.perf_counter() - start


def compare(variant, steps=200, batch=8, seq=32, peer="torch", seed=0,
            lr=1e-3, log_every=20, device="cpu"):
    """Trains the model with attnc's `variant` attention and with its peer
    from the same weights on the same batches, on `device` (a CUDA device
    under bfloat16 autocast). Returns a dict: the two curves
    ([(step, loss)]), the largest relative difference between them at a
    logged step, and each run's seconds."""
    context = seq - 1  # the model reads tokens 0 .. seq-2
    if variant == "softmax":
        ours = attnc_softmax_attention(context)
        theirs = (flex_softmax_attention(context, device) if peer == "flex"
                  else torch_softmax_attention)
    elif variant == "softplus":
        ours = attnc_softplus_attention()
        theirs = torch_softplus_attention
    elif variant == "sigmoid":
        ours = attnc_sigmoid_attention(context)
        theirs = torch_sigmoid_attention(context)
    else:
        raise ValueError("unknown variant %r (softmax, softplus, sigmoid)" %
                         variant)
    batches = copy_batches(steps, batch, seq, seed + 1).to(device)
    model = make_model(ours, seq, seed).to(device)
    peer_model = make_model(theirs, seq, seed).to(device)
    peer_model.load_state_dict(copy.deepcopy(model.state_dict()))
    autocast = device != "cpu"
    curve, seconds = train(model, batches, lr, log_every, autocast)
    peer_curve, peer_seconds = train(peer_model, batches, lr, log_every,
                                     autocast)
    difference = max(abs(a - b) / abs(b) for (_, a), (_, b)
                     in zip(curve, peer_curve))
    return {"variant": variant, "peer": peer if variant == "softmax" else
            "torch", "attnc": curve, "peer_curve": peer_curve,
            "max_rel_diff": difference, "attnc_s": seconds,
            "peer_s": peer_seconds}


def print_table(results, out=sys.stdout):
    header = "step"
    for result in results:
        header += "  %-9s %-9s %-9s %-8s" % (
            result["variant"][:9], "attnc", result["peer"], "rel_diff")
    print(header, file=out)
    for row in range(len(results[0]["attnc"])):
        line = "%4d" % results[0]["attnc"][row][0]
        for result in results:
            (_, a), (_, b) = result["attnc"][row], result["peer_curve"][row]
            line += "  %-9s %-9.5f %-9.5f %-8.1e" % ("", a, b,
                                                    abs(a - b) / abs(b))
        print(line, file=out)
    for result in results:
        print("%s: max rel diff %.2e; attnc %.1f s, %s %.1f s" % (
            result["variant"], result["max_rel_diff"], result["attnc_s"],
            result["peer"], result["peer_s"]), file=out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--variants", default="softmax,softplus")
    parser.add_argument("--peer", choices=("torch", "flex"), default="torch",
                        help="the softmax variant's peer: attention written "
                        "in PyTorch, or PyTorch's FlexAttention")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: PyTorch's)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--prepare", metavar="DIR",
                        help="compile the GPU packages of the variants into "
                        "the package store DIR and stop (needs the attnc "
                        "compiler, not torch)")
    parser.add_argument("--target", default="sm_90a",
                        help="the CUDA chip of --prepare")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    if args.prepare:
        import os
        os.environ["ATTNC_PACKAGE_DIR"] = args.prepare
        prepare_packages(variants, args.target)
        return 0
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    where = "CPU, float32"
    if args.device == "cuda":
        major, _ = torch.cuda.get_device_capability()
        _TARGET.update(target="sm_90a" if major == 9 else "sm_80",
                       dtype="bf16")
        where = "%s, bfloat16 autocast" % torch.cuda.get_device_name()
    results = []
    for variant in variants:
        results.append(compare(variant, args.steps, args.batch, args.seq,
                               args.peer, args.seed, args.lr, args.log_every,
                               args.device))
    print("tiny LM (%d layers, width %d, %d heads), copying task, vocab %d, "
          "seq %d, batch %d, %d steps of Adam (lr %g), torch %s, %s" % (
              LAYERS, WIDTH, HEADS, VOCAB, args.seq, args.batch, args.steps,
              args.lr, torch.__version__, where))
    print_table(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
