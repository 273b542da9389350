#!/usr/bin/env python3
"""The PyTorch side of `cnn bench`: the same models, batches, optimiser and thread counts, trained
on CPU with synthetic data, printing the same JSON lines (model, batch, threads, images_per_second).

    python3 scripts/pytorch_bench.py                      # all models, 1 and 2 threads
    python3 scripts/pytorch_bench.py --model lenet5 --threads 1
    python3 scripts/pytorch_bench.py --cnn .build/release/cnn --rounds 3
        # side by side: each model is run by `cnn bench` and by PyTorch in turn (never at once),
        # round after round, and the ratio of the medians is printed at the end.
    python3 scripts/pytorch_bench.py --precision fp32,bf16 --cnn .build/release/cnn
        # bf16 too: PyTorch's CPU autocast (torch.autocast('cpu', dtype=torch.bfloat16): convolutions
        # and linear layers in bf16, batch norm and the loss in fp32, fp32 master weights) against
        # `cnn bench --precision bf16` (train.precision: bf16).

Timing: a monotonic clock over several repetitions after a warm-up; the median is reported, as
`cnn bench` does. Needs `pip install torch`.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

MODELS = ["lenet5", "fashion-mnist", "resnet20", "alexnet"]
BATCH = {"lenet5": 64, "fashion-mnist": 128, "resnet20": 128, "alexnet": 8}
INPUT = {"lenet5": (1, 32, 32), "fashion-mnist": (1, 28, 28), "resnet20": (3, 32, 32), "alexnet": (3, 227, 227)}
CLASSES = {"lenet5": 10, "fashion-mnist": 10, "resnet20": 10, "alexnet": 1000}


def build(name, nn):
    """The model as `cnn bench` builds it (Sources/Benchmark/BenchmarkModels.swift)."""
    if name == "lenet5":
        return nn.Sequential(
            nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, 10))
    if name == "fashion-mnist":
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
            nn.Linear(128, 10))
    if name == "resnet20":
        class BasicBlock(nn.Module):
            def __init__(self, inputs, filters, stride):
                super().__init__()
                self.conv1 = nn.Conv2d(inputs, filters, 3, stride=stride, padding=1, bias=False)
                self.bn1 = nn.BatchNorm2d(filters)
                self.relu = nn.ReLU()
                self.conv2 = nn.Conv2d(filters, filters, 3, padding=1, bias=False)
                self.bn2 = nn.BatchNorm2d(filters)
                self.downsample = None
                if stride != 1 or inputs != filters:
                    self.downsample = nn.Sequential(
                        nn.Conv2d(inputs, filters, 1, stride=stride, bias=False), nn.BatchNorm2d(filters))

            def forward(self, x):
                out = self.relu(self.bn1(self.conv1(x)))
                out = self.bn2(self.conv2(out))
                shortcut = x if self.downsample is None else self.downsample(x)
                return self.relu(out + shortcut)

        layers = [nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
        inputs = 16
        for filters, stride in [(16, 1), (32, 2), (64, 2)]:
            for block in range(3):
                layers.append(BasicBlock(inputs, filters, stride if block == 0 else 1))
                inputs = filters
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
        return nn.Sequential(*layers)
    if name == "alexnet":
        # PyTorch divides alpha by the window size: 5e-4 / 5 is the paper's 1e-4.
        return nn.Sequential(
            nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(),
            nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0), nn.MaxPool2d(3, stride=2),
            nn.Conv2d(96, 256, 5, padding=2), nn.ReLU(),
            nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0), nn.MaxPool2d(3, stride=2),
            nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(3, stride=2),
            nn.Flatten(),
            nn.Linear(256 * 6 * 6, 4096), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(4096, 1000))
    raise SystemExit(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


def measure(name, threads, repetitions, seconds, warmup, precision="fp32"):
    import contextlib

    import torch
    from torch import nn

    torch.manual_seed(1)
    torch.set_num_threads(threads)
    model = build(name, nn)
    model.train()
    batch = BATCH[name]
    images = torch.randn(batch, *INPUT[name])
    labels = torch.randint(0, 10, (batch,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_function = nn.CrossEntropyLoss()

    def arithmetic():
        if precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step():
        optimizer.zero_grad(set_to_none=False)
        with arithmetic():
            loss = loss_function(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    for _ in range(max(1, warmup)):
        step()
    start = time.monotonic()
    step()
    calibration = time.monotonic() - start
    steps = max(1, round(seconds / max(calibration, 1e-6)))
    per_step = []
    for _ in range(repetitions):
        begin = time.monotonic()
        for _ in range(steps):
            step()
        per_step.append((time.monotonic() - begin) / steps)
    median = statistics.median(per_step)
    return {
        "model": name, "batch": batch, "threads": threads, "precision": precision, "images_per_second": batch / median,
        "seconds_per_step": median, "repetitions": repetitions, "steps_per_repetition": steps,
        "framework": f"torch {torch.__version__}",
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def run_cnn(binary, name, threads, repetitions, seconds, precisions):
    command = [binary, "bench", "--json", "--no-convolutions", "--no-memory", "--model", name,
               "--repetitions", str(repetitions), "--seconds", str(seconds), "--precision", ",".join(precisions)]
    for t in threads:
        command += ["--threads", str(t)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [line for line in lines if "images_per_second" in line]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", choices=MODELS, help="a model (repeatable; default: all)")
    parser.add_argument("--threads", action="append", type=int, help="a thread count (repeatable; default: 1 and 2)")
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.4, help="seconds per timed repetition")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--cnn", help="path of the `cnn` executable: run it side by side and print ratios")
    parser.add_argument("--rounds", type=int, default=1, help="with --cnn: alternate both sides this many times")
    parser.add_argument("--precision", default="fp32",
                        help="fp32, bf16 (PyTorch's bf16 autocast), or both side by side: fp32,bf16")
    arguments = parser.parse_args()
    models = arguments.model or MODELS
    threads = arguments.threads or [1, 2]
    precisions = [p.strip() for p in arguments.precision.split(",") if p.strip()]
    for p in precisions:
        if p not in ("fp32", "bf16"):
            raise SystemExit(f"--precision {arguments.precision}: '{p}' is not a precision; use fp32, bf16 or fp32,bf16")

    if not arguments.cnn:
        for name in models:
            for t in threads:
                for p in precisions:
                    print(json.dumps(measure(name, t, arguments.repetitions, arguments.seconds, arguments.warmup, p)), flush=True)
        return

    ours, theirs = {}, {}
    for round_number in range(arguments.rounds):
        for name in models:
            try:
                for line in run_cnn(arguments.cnn, name, threads, arguments.repetitions, arguments.seconds, precisions):
                    line["side"] = "cnn"
                    line["round"] = round_number
                    print(json.dumps(line), flush=True)
                    key = (name, line["threads"], line.get("precision", "fp32"))
                    ours.setdefault(key, []).append(line["images_per_second"])
            except subprocess.CalledProcessError as error:
                print(f"cnn bench --model {name} failed: {error.stderr.strip()}", file=sys.stderr)
            for t in threads:
                for p in precisions:
                    line = measure(name, t, arguments.repetitions, arguments.seconds, arguments.warmup, p)
                    line["side"] = "pytorch"
                    line["round"] = round_number
                    print(json.dumps(line), flush=True)
                    theirs.setdefault((name, t, p), []).append(line["images_per_second"])

    print()
    print(f"{'model':<15}{'threads':>8}{'precision':>10}{'cnn img/s':>12}{'torch img/s':>13}{'ratio':>8}")
    for name in models:
        for t in threads:
            for p in precisions:
                key = (name, t, p)
                if key not in ours or key not in theirs:
                    print(f"{name:<15}{t:>8}{p:>10}{'n/a':>12}")
                    continue
                a, b = statistics.median(ours[key]), statistics.median(theirs[key])
                print(f"{name:<15}{t:>8}{p:>10}{a:>12.1f}{b:>13.1f}{a / b:>8.2f}")


if __name__ == "__main__":
    main()
