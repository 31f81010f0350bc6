"""One AdamW step over a 3-layer MiniLM student's parameters: the per-tensor loop, foreach, fused.

    python benchmarks/train/optimizer.py [--threads 1] [--repeats 20]

xtc's training loop uses the fused AdamW (src/xtc/train.py). The parameters are those of the
GLUE table's 3-layer student built from the MiniLM-L6 geometry (random weights: the time
depends only on the shapes; 30522 x 384 word embeddings are most of them), with random
gradients. Prints the time per step of each implementation, measured in one run, and the largest
difference of the fused update from the per-tensor one after 10 steps. Writes optimizer.md beside
this script.
"""

import argparse
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from xtc.models import resolve_model
from xtc.train import param_groups

HERE = Path(__file__).parent
VARIANTS = {"per-tensor loop (torch's CPU default)": {"foreach": False}, "foreach": {"foreach": True},
            "fused (xtc)": {"fused": True}}


def student_params() -> list[torch.nn.Parameter]:
    config = AutoConfig.from_pretrained(resolve_model("minilm-l6"), num_hidden_layers=3, num_labels=2)
    torch.manual_seed(0)
    return list(AutoModelForSequenceClassification.from_config(config).parameters())


def run(options: dict, repeats: int, steps_for_check: int = 10) -> tuple[float, list[torch.Tensor]]:
    model = torch.nn.Module()
    model.params = torch.nn.ParameterList(student_params())
    generator = torch.Generator().manual_seed(1)
    for p in model.params:
        p.grad = torch.randn(p.shape, generator=generator)
    optimizer = torch.optim.AdamW(param_groups(model, 0.01), lr=5e-5, **options)
    for _ in range(steps_for_check):
        optimizer.step()
    after = [p.detach().clone() for p in model.params]
    start = time.perf_counter()
    for _ in range(repeats):
        optimizer.step()
    return (time.perf_counter() - start) / repeats * 1000, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--note", default="", help="e.g. what else ran on the machine")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {name: run(options, args.repeats) for name, options in VARIANTS.items()}
    base_ms, base_params = results["per-tensor loop (torch's CPU default)"]
    count = sum(p.numel() for p in base_params)
    lines = [f"# AdamW step, 3-layer MiniLM student ({count / 1e6:.1f} M parameters), {args.threads} thread(s)", "",
             f"Command: `python benchmarks/train/optimizer.py --threads {args.threads} --repeats {args.repeats}`"
             + (f"  \n{args.note}" if args.note else ""), "",
             "| AdamW | ms per step | speed-up | max abs difference from the per-tensor update (10 steps) |",
             "|---|---|---|---|"]
    for name, (ms, params) in results.items():
        diff = max((a - b).abs().max().item() for a, b in zip(params, base_params))
        lines.append(f"| {name} | {ms:.1f} | {base_ms / ms:.2f}x | {diff:.1e} |")
    print("\n".join(lines))
    (HERE / "optimizer.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
