#!/usr/bin/env python3
"""Writes image folders in torchvision's ImageFolder layout for the folder data set's long checks.

    python3 scripts/image_folder.py fashion-mnist OUT [--format jpeg|png] [--quality 90]
        # Fashion-MNIST (/usr/share/datasets/fashion-mnist) as OUT/train/CLASS/NNNNN.jpg and
        # OUT/val/CLASS/NNNNN.jpg, every third image stored as RGB (grey copied), the rest grey.
    python3 scripts/image_folder.py photos OUT --count 2000 [--classes 10] [--size 500x375]
        # photo-sized JPEGs (smooth colour fields with edges and noise, quality 90) for throughput
        # benchmarks; every file different.

Needs numpy and Pillow (scripts/python-env makes an environment with both).
"""

import argparse
import gzip
import os

import numpy as np
from PIL import Image

CLASSES = ["0-tshirt", "1-trouser", "2-pullover", "3-dress", "4-coat",
           "5-sandal", "6-shirt", "7-sneaker", "8-bag", "9-ankle-boot"]


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist(out, fmt, quality, source):
    for split, prefix in (("train", "train"), ("val", "t10k")):
        images = idx(os.path.join(source, f"{prefix}-images-idx3-ubyte.gz"))
        labels = idx(os.path.join(source, f"{prefix}-labels-idx1-ubyte.gz"))
        for name in CLASSES:
            os.makedirs(os.path.join(out, split, name), exist_ok=True)
        for i, (pixels, label) in enumerate(zip(images, labels)):
            image = Image.fromarray(pixels, "L")
            if i % 3 == 1:
                image = image.convert("RGB")
            ext = "jpg" if fmt == "jpeg" else "png"
            path = os.path.join(out, split, CLASSES[label], f"{i:05d}.{ext}")
            if fmt == "jpeg":
                image.save(path, quality=quality)
            else:
                image.save(path)
        print(f"{out}/{split}: {len(labels)} images")


def photos(out, count, classes, size, quality, seed):
    rng = np.random.default_rng(seed)
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    for split, n in (("train", count), ("val", max(count // 10, classes))):
        for c in range(classes):
            os.makedirs(os.path.join(out, split, f"class{c:03d}"), exist_ok=True)
        for i in range(n):
            c = i % classes
            a, b = rng.uniform(0.005, 0.03, 2)
            base = rng.uniform(0, 255, 3)
            fields = [base[k] / 2 + 60 * np.sin(xs * a * (k + 1) + ys * b + c) + 40 * np.cos(ys * a - xs * b * k)
                      for k in range(3)]
            pixels = np.stack(fields, axis=-1) + rng.normal(0, 12, (height, width, 3))
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            pixels[(xs - cx) ** 2 + (ys - cy) ** 2 < (height / 5) ** 2] = rng.uniform(0, 255, 3)
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(
                os.path.join(out, split, f"class{c:03d}", f"{i:06d}.jpg"), quality=quality)
        print(f"{out}/{split}: {n} images")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["fashion-mnist", "photos"])
    parser.add_argument("out")
    parser.add_argument("--format", choices=["jpeg", "png"], default="jpeg")
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--source", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--size", default="500x375")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.kind == "fashion-mnist":
        fashion_mnist(args.out, args.format, args.quality, args.source)
    else:
        w, h = (int(v) for v in args.size.split("x"))
        photos(args.out, args.count, args.classes, (w, h), args.quality, args.seed)


if __name__ == "__main__":
    main()
