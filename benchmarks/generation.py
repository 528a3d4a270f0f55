"""Generation speed: rlhf.generation's hand-written KV-cache loop vs transformers' model.generate.

Random-init model of the tiny recipe's size, random prompts; EOS suppressed in both so every
row decodes exactly max_new_tokens (same work on both sides). Prints new tokens/sec and the ratio.

    .venv/bin/python benchmarks/generation.py [--recipe tiny] [--threads 1] [--batch 32]
"""

from __future__ import annotations

import argparse
import time

import torch

from rlhf import config as lab_config
from rlhf.generation import generate
from rlhf.models import build_base_model
from rlhf.tokenizer import train_tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default=None, help="recipe for the model size (default: defaults)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cfg = lab_config.load(args.recipe) if args.recipe else lab_config.LabConfig()
    pcfg = cfg.pretrain
    g = torch.Generator().manual_seed(0)
    # A throwaway tokenizer with the recipe's vocabulary size, trained on random "words".
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = [
        "".join(letters[i] for i in torch.randint(0, 26, (5,), generator=g)) for _ in range(3000)
    ]
    docs = [
        " ".join(words[j] for j in torch.randint(0, 3000, (64,), generator=g)) for _ in range(500)
    ]
    tok = train_tokenizer(docs, cfg.world.vocab_size)
    model = build_base_model(pcfg, tok).eval()
    # Suppress EOS so both paths decode the full length.
    with torch.no_grad():
        model.lm_head.weight[tok.eos_token_id] = 0.0  # tied: also the EOS embedding; fine here
    prompts = [
        "Q: " + " ".join(words[j] for j in torch.randint(0, 3000, (int(n),), generator=g)) + "\nA:"
        for n in torch.randint(3, 12, (args.batch,), generator=g)
    ]
    print(
        f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, "
        f"batch {args.batch}, {args.new_tokens} new tokens, threads {args.threads}"
    )

    def ours() -> int:
        out = generate(model, tok, prompts, args.new_tokens, seed=0, batch_size=args.batch)
        return int(out.response_mask.sum())

    def hf() -> int:
        enc = tok(prompts, padding=True, padding_side="left", return_tensors="pt")
        torch.manual_seed(0)
        with torch.no_grad():
            out = model.generate(
                **enc,
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        return (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]

    ours(), hf()  # warm-up
    results: dict[str, list[float]] = {"rlhf.generation loop": [], "model.generate": []}
    for _ in range(args.repeats):  # interleaved so drift in machine load hits both alike
        for name, fn in (("rlhf.generation loop", ours), ("model.generate", hf)):
            t0 = time.perf_counter()
            n = fn()
            results[name].append(n / (time.perf_counter() - t0))
    print(f"{'method':<24}{'tokens/sec (median)':>22}")
    med = {k: sorted(v)[len(v) // 2] for k, v in results.items()}
    for k, v in med.items():
        print(f"{k:<24}{v:>22.0f}")
    print(f"ratio loop / generate: {med['rlhf.generation loop'] / med['model.generate']:.2f}")


if __name__ == "__main__":
    main()
