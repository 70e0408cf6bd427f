"""Regenerate docs/results.md's table: every experiment config, several seeds, mean +- std.

    python scripts/reproduce_results.py                       # all experiments, seeds 1 2 3
    python scripts/reproduce_results.py -e lenet_digits linreg_california -s 1 2
    python scripts/reproduce_results.py --threads 1 --output logs/results.md

Each run is ``python src/train.py experiment=NAME seed=S trainer.deterministic=true``, a
fresh process with the default callbacks and logger, as a user would start it, so the
wall time is what that command takes, start-up included. When the
reference data folder (``--data-dir``, default ``../shared/data``) exists, the MNIST and
California experiments read it (MNIST: only the 10,000 official test images exist there,
so they are split 8,000 / 2,000 with ``data.train_from=test``); otherwise each experiment
uses its own default data (downloaded when online). Beside the table the script computes
the closed-form least-squares reference on the same California split, the noiseless
teacher's accuracy on the synthetic test split, and how far the linear model's weights
are from the synthetic teacher's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.data.synthetic import SyntheticDataModule  # noqa: E402


@dataclass(frozen=True)
class Experiment:
    name: str
    data: str
    metric: str


EXPERIMENTS = [
    Experiment("lenet_digits", "digits (1,797 8x8 images, 20% test)", "test/acc"),
    Experiment("lenet_mnist", "MNIST", "test/acc"),
    Experiment("mlp_mnist", "MNIST", "test/acc"),
    Experiment("linreg_california", "California housing (20% test)", "test/mse"),
    Experiment("mlp_california", "California housing (20% test)", "test/rmse"),
    Experiment("mlp_synthetic", "synthetic, 4 classes from a linear teacher", "test/acc"),
    Experiment("linreg_synthetic", "synthetic regression, noise 0.1", "test/mse"),
]
BY_NAME = {experiment.name: experiment for experiment in EXPERIMENTS}
OFFLINE_MNIST = "8,000 train+val / 2,000 test of the official MNIST test images"


def data_overrides(name: str, data_dir: Path | None) -> list[str]:
    """Point the real-data experiments at the local reference copy when there is one."""
    if data_dir is None:
        return []
    if name.endswith("_mnist"):
        return [f"data.data_dir={data_dir}", "data.train_from=test", "data.download=false"]
    if name.endswith("_california"):
        return [f"data.csv_path={data_dir / 'california_housing.csv'}"]
    return []


def run_once(
    name: str, seed: int, extra: list[str], out_dir: Path, threads: int | None
) -> tuple[dict, float]:
    """One ``src/train.py`` process; returns its metrics.json and its wall time."""
    run_dir = out_dir / name / f"seed{seed}"
    command = [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        f"experiment={name}",
        f"seed={seed}",
        "trainer.deterministic=true",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}{result.stderr}")
    return json.loads((run_dir / "metrics.json").read_text()), wall


def composed(name: str, extra: list[str]) -> DictConfig:
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=[f"experiment={name}", *extra])


def datamodule_of(name: str, extra: list[str]):
    data = instantiate(composed(name, extra).data)
    data.prepare_data()
    data.setup("fit")
    return data


def least_squares_mse(name: str, extra: list[str]) -> float:
    """Closed-form OLS fitted on exactly the training rows the experiment trains on."""
    from sklearn.linear_model import LinearRegression

    data = datamodule_of(name, extra)
    train, test = data.datasets["train"], data.datasets["test"]
    model = LinearRegression().fit(train.inputs.numpy(), train.targets.numpy())
    residual = model.predict(test.inputs.numpy()) - test.targets.numpy()
    return float((residual**2).mean())


def sklearn_split_mse(csv_path: Path) -> float:
    """The textbook figure: OLS on ``train_test_split(test_size=0.2, random_state=42)``."""
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import train_test_split

    from src.data.tabular import read_csv

    features, target, _ = read_csv(csv_path, "MedHouseVal")
    x_train, x_test, y_train, y_test = train_test_split(
        features.astype("float64"), target.astype("float64"), test_size=0.2, random_state=42
    )
    residual = LinearRegression().fit(x_train, y_train).predict(x_test) - y_test
    return float((residual**2).mean())


def teacher_accuracy(name: str, extra: list[str]) -> float:
    """Accuracy of the noiseless teacher's argmax against the noisy test labels: the ceiling."""
    data: SyntheticDataModule = datamodule_of(name, extra)
    test = data.datasets["test"]
    clean = (test.inputs @ data.true_weight + data.true_bias).argmax(dim=1)
    return float((clean == test.targets).float().mean())


def weight_error(name: str, extra: list[str], checkpoint: str) -> tuple[float, float, float]:
    """Largest |w - w_teacher| of the trained model and of closed-form OLS on its rows.

    The third value is the noise floor: the standard error of one least-squares weight,
    noise / sqrt(training rows), for standard normal features.
    """
    data: SyntheticDataModule = datamodule_of(name, extra)
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    learned = torch.cat([state["net.linear.weight"].T, state["net.linear.bias"][None]])
    truth = torch.cat([data.true_weight, data.true_bias[None]])
    train = data.datasets["train"]
    design = torch.cat([train.inputs, torch.ones(len(train.inputs), 1)], dim=1).double()
    ols = torch.linalg.lstsq(design, train.targets.double()).solution.float()
    floor = data.noise / len(train.inputs) ** 0.5
    return float((learned - truth).abs().max()), float((ols - truth).abs().max()), floor


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {spread:.4f}"


def command_of(name: str, extra: list[str]) -> str:
    shown = [o for o in extra if not o.startswith("data.download")]
    return " ".join(["python src/train.py", f"experiment={name}", *shown])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-e", "--experiments", nargs="+", choices=list(BY_NAME), default=None)
    parser.add_argument("-s", "--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS per run")
    parser.add_argument("--output", type=Path, default=ROOT / "logs" / "results.md")
    args = parser.parse_args()
    data_dir = args.data_dir.resolve() if args.data_dir.is_dir() else None
    # docs/results.md shows the reference folder relative to the repository root
    shared = (ROOT.parent / "shared" / "data").resolve()
    display_dir = Path("../shared/data") if data_dir == shared else data_dir

    rows, notes, raw = [], [], {}
    with tempfile.TemporaryDirectory() as scratch:
        for experiment in [BY_NAME[n] for n in (args.experiments or BY_NAME)]:
            extra = data_overrides(experiment.name, data_dir)
            runs = [
                run_once(experiment.name, seed, extra, Path(scratch), args.threads)
                for seed in args.seeds
            ]
            values = [metrics[experiment.metric] for metrics, _ in runs]
            walls = [wall for _, wall in runs]
            raw[experiment.name] = {"seeds": args.seeds, experiment.metric: values, "wall_s": walls}
            print(f"{experiment.name}: {experiment.metric} {values}, wall {walls}", flush=True)
            shown = data_overrides(experiment.name, display_dir) if data_dir else []
            data = OFFLINE_MNIST if "mnist" in experiment.name and data_dir else experiment.data
            rows.append(
                f"| `{experiment.name}` | {data} | `{command_of(experiment.name, shown)}` "
                f"| {experiment.metric} | {mean_std(values)} | {statistics.mean(walls):.0f} s |"
            )
            if experiment.name == "linreg_california":
                reference = least_squares_mse(experiment.name, extra)
                gap = statistics.mean(values) / reference - 1
                notes.append(
                    f"- `linreg_california`: test MSE {mean_std(values)} vs scikit-learn "
                    f"`LinearRegression` (closed form) on the same split and training rows "
                    f"{reference:.4f} ({gap:+.2%})."
                )
                raw[experiment.name]["least_squares_mse"] = reference
                if data_dir:
                    sklearn_mse = sklearn_split_mse(data_dir / "california_housing.csv")
                    notes.append(
                        f"  On scikit-learn's `train_test_split(test_size=0.2, random_state=42)`"
                        f" the same closed form gives {sklearn_mse:.4f}: the two 20% test "
                        "sets differ, so compare each model with the reference on its own split."
                    )
            if experiment.name == "mlp_synthetic":
                ceiling = teacher_accuracy(experiment.name, extra)
                notes.append(
                    f"- `mlp_synthetic`: test accuracy {mean_std(values)}; the noiseless teacher "
                    f"itself scores {ceiling:.4f} against the noisy test labels (the ceiling)."
                )
                raw[experiment.name]["teacher_accuracy"] = ceiling
            if experiment.name == "linreg_synthetic":
                errors = [
                    weight_error(experiment.name, extra, m["best_model_path"]) for m, _ in runs
                ]
                learned = max(e for e, _, _ in errors)
                _, ols, floor = errors[0]
                noise = composed(experiment.name, extra).data.noise
                notes.append(
                    f"- `linreg_synthetic`: largest |w - w_teacher| over the weights and the bias "
                    f"{learned:.4f} (worst seed); closed-form least squares on the same rows: "
                    f"{ols:.4f}; one standard error of a least-squares weight, "
                    f"noise / sqrt(training rows): {floor:.4f}. Test MSE {mean_std(values)} "
                    f"vs the noise variance {noise**2:.4f}."
                )
                raw[experiment.name]["max_weight_error"] = [e for e, _, _ in errors]

    header = [
        f"Mean ± std over seeds {', '.join(map(str, args.seeds))} "
        f"(`trainer.deterministic=true`); wall time per run, process start-up included.",
        "",
        "| experiment | data | command | metric | value | wall time |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    table = "\n".join([*header, *rows, "", *notes]) + "\n"
    print("\n" + table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(table)
    args.output.with_suffix(".json").write_text(json.dumps(raw, indent=2) + "\n")
    print(f"written to {args.output} (and {args.output.with_suffix('.json').name})")


if __name__ == "__main__":
    main()
