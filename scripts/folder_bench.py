#!/usr/bin/env python3
"""Decode + augment throughput per core at 224 x 224 from a JPEG folder: `cnn data bench` against
torchvision's ImageFolder + DataLoader (Pillow) on the same files, one after the other, one thread
each, with the training transforms of torchvision's classification recipe (RandomResizedCrop(224),
RandomHorizontalFlip, ToTensor, Normalize).

    python3 scripts/folder_bench.py --cnn .build/release/cnn [--folder data/bench-photos] [--images 1024] [--repeat 3]

The folder is made on first use (scripts/image_folder.py photos: 500x375 JPEGs, quality 90).
Prints one JSON line per side and run, the two sides alternating, and the ratio of each run; with
--repeat N > 1 also the range of each side and of the ratio. Needs torch, torchvision and Pillow
(scripts/python-env).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def torchvision_rate(folder, images, batch):
    import torch
    from torchvision import datasets, transforms
    torch.set_num_threads(1)
    transform = transforms.Compose([
        transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    dataset = datasets.ImageFolder(os.path.join(folder, "train"), transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=0)
    iterator = iter(loader)
    next(iterator)  # warm-up, as cnn data bench does
    done, start = 0, time.perf_counter()
    while done < images:
        try:
            x, _ = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            x, _ = next(iterator)
        done += x.shape[0]
    seconds = time.perf_counter() - start
    return {"side": "torchvision", "images": done, "seconds": round(seconds, 3), "images_per_second": round(done / seconds, 1)}


def cnn_rate(cnn, folder, images, batch):
    config = f"""
model: {{input: [3, 224, 224], layers: [globalavgpool, flatten, {{dense: 10}}]}}
data:
  dataset: folder
  path: {folder}
  transforms:
    random_resized_crop: {{size: 224}}
    horizontal_flip: 0.5
    resize: 256
    center_crop: 224
train: {{batch: {batch}, micro_batch: {batch}}}
"""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(config)
    out = subprocess.run([cnn, "data", "bench", f.name, "--images", str(images), "--batch", str(batch)],
                         check=True, capture_output=True, text=True).stdout
    os.unlink(f.name)
    row = json.loads(out.strip().splitlines()[-1])
    row["side"] = "cnn"
    return row


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cnn", default=".build/release/cnn")
    parser.add_argument("--folder", default="data/bench-photos")
    parser.add_argument("--count", type=int, default=1000, help="images to generate when the folder is absent")
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=1, help="side-by-side runs (each side alternating)")
    args = parser.parse_args()
    if not os.path.isdir(os.path.join(args.folder, "train")):
        here = os.path.dirname(os.path.abspath(__file__))
        subprocess.run([sys.executable, os.path.join(here, "image_folder.py"), "photos", args.folder,
                        "--count", str(args.count)], check=True)
    rows = []
    for _ in range(args.repeat):
        ours = cnn_rate(args.cnn, os.path.abspath(args.folder), args.images, args.batch)
        print(json.dumps(ours), flush=True)
        theirs = torchvision_rate(args.folder, args.images, args.batch)
        print(json.dumps(theirs), flush=True)
        ratio = ours["images_per_second"] / theirs["images_per_second"]
        print(f"cnn / torchvision images per second per core: {ratio:.2f}x", flush=True)
        rows.append((ours["images_per_second"], theirs["images_per_second"], ratio))
    if len(rows) > 1:
        ours, theirs, ratios = zip(*rows)
        print(f"{len(rows)} runs: cnn {min(ours):.0f}-{max(ours):.0f} images/s, torchvision "
              f"{min(theirs):.0f}-{max(theirs):.0f} images/s, ratio {min(ratios):.2f}-{max(ratios):.2f}x")


if __name__ == "__main__":
    main()
