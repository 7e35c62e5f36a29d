"""Training time against number of images, with the backbone's own ms per image beside it, and the
accuracy the taught model reaches on pictures it never saw, per pictures-a-label (issue 24).

    nice .venv/bin/python tests/bench_train.py [--backbone MODEL] [--sizes 2,5,10,20,50] [--threads 1]

The scenes are test_train.py's: the state task (coffee scene, chip bag present or absent, lighting and
jitter) and four kinds of animal (random crops of the fixture photos; tested on other photos). Numbers
for docs/BENCHMARKS.md; not a test (the machine running it decides the times)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import (ANIMALS_TEST, ANIMALS_TRAIN, BACKBONE, bin_scene, photo, variant,  # noqa: E402
                        write)

from edge_runtime.engines.ort import Engine  # noqa: E402
from edge_runtime.engines.preprocess import Preprocessor  # noqa: E402
from edge_runtime.teach import train as teach  # noqa: E402


def scenes(task: str, per_label: int, rng) -> dict[str, list[np.ndarray]]:
    if task == "state":
        return {"empty": [bin_scene(False, rng) for _ in range(per_label)],
                "full": [bin_scene(True, rng) for _ in range(per_label)]}
    return {label: [variant(photo(names[i % len(names)]), rng) for i in range(per_label)]
            for label, names in ANIMALS_TRAIN.items()}


def tests(task: str, rng) -> list[tuple[np.ndarray, str]]:
    if task == "state":
        return [(bin_scene(full, rng), label) for _ in range(20) for label, full in (("empty", False), ("full", True))]
    return [(variant(photo(names[i % len(names)]), rng), label)
            for label, names in ANIMALS_TEST.items() for i in range(10)]


def accuracy(model: Path, cases, threads: int) -> float:
    engine = Engine(str(model), threads)
    pre = Preprocessor(engine.spec.input)
    hits = 0
    for image, label in cases:
        out = engine.session.run(None, {engine.input_name: pre(image)})[0][0]
        hits += engine.spec.label(int(np.argmax(out))) == label
    return hits / len(cases)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default=str(BACKBONE))
    p.add_argument("--sizes", default="2,5,10,20,50")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    print("| task | per label | images | backbone ms/image | features s | head fit ms | total s | head | "
          "CV acc | unseen acc |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for task in ("state", "animals"):
        cases = tests(task, np.random.default_rng(12345))
        for per_label in (int(s) for s in args.sizes.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                data = Path(tmp) / "data"
                for label, images in scenes(task, per_label, np.random.default_rng(per_label)).items():
                    for i, image in enumerate(images):
                        write(data / label, f"{i}.jpg", image)
                out = Path(tmp) / "taught.onnx"
                t0 = time.perf_counter()
                r = teach.train(data, args.backbone, out, threads=args.threads)
                total = time.perf_counter() - t0
                n = sum(r.images.values())
                print(f"| {task} | {per_label} | {n} | {r.backbone_ms_per_image:.1f} | "
                      f"{r.backbone_ms_per_image * n / 1000:.2f} | {r.fit_s * 1000:.0f} | {total:.2f} | {r.method} | "
                      f"{r.accuracy:.0%} | {accuracy(out, cases, args.threads):.0%} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
