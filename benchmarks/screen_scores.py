"""Screening scores of every backbone of a benchmark config on its first dataset:
LogME, kNN and a closed-form ridge probe on global-pool features (tlbench/search/screen.py).

    python benchmarks/screen_scores.py [benchmarks.yaml]

Prints one line per backbone with the seconds spent extracting features and scoring.
Issue 14, step 1: the scores alone; the search does not use them yet.
"""

import sys
import time
from pathlib import Path

import torch

from tlbench.config import load_config
from tlbench.engine.inputs import input_size, inputs_of
from tlbench.engine.pipeline import ExampleSplit
from tlbench.host import plugins
from tlbench.search import calls, planning, preflight
from tlbench.search.screen import knn_accuracy, logme, ridge_probe_accuracy


def main(path: Path) -> None:
    bench, base = load_config(path)
    plan = planning.make_plan(bench, plugins.collect(plugins.make_plugin_manager(bench.plugins, base_dir=base)), base)
    entry, _ = plan.datasets[0]
    splits = preflight.preflight(plan)[entry.key]
    for key, backbone in plan.backbones.items():
        torch.manual_seed(0)
        built = calls.build_backbone(backbone, len(splits.classes))
        model = built.model.eval()
        inputs = inputs_of(built)
        _, transform = inputs.transforms(input_size(inputs, backbone.entry, bench.training), False)
        start = time.perf_counter()
        feats = {}
        with torch.no_grad():
            for name in ("train", "val"):
                images = ExampleSplit(getattr(splits, name), transform)
                x = torch.stack([images[i][0] for i in range(len(images))])
                feats[name] = torch.cat(
                    [model.forward_head(model.forward_features(b), pre_logits=True) for b in x.split(128)]
                ).numpy()
        extracted = time.perf_counter() - start
        start = time.perf_counter()
        train, val = (feats["train"], splits.train.labels), (feats["val"], splits.val.labels)
        scores = f"LogME {logme(*train):.3f} kNN {knn_accuracy(*train, *val):.3f} ridge {ridge_probe_accuracy(*train, *val):.3f}"
        print(f"{entry.key} {key}: {scores} (features {extracted:.1f} s, scores {time.perf_counter() - start:.2f} s)")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks.yaml"))
