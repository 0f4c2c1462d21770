"""The subliminal-learning mechanism's positive control: Cloud et al. 2025 (arXiv 2507.14805,
section 6), the auxiliary-logit MNIST demo, here on scikit-learn's bundled digits.

Data: `sklearn.datasets.load_digits()`, 1797 images of 8x8 pixels (not MNIST: no package here ships
MNIST offline). One fixed stratified split (70/30, split seed 0): 1257 train, 540 test images.
Pixels are scaled to [-1, 1], as the paper's MNIST (Normalize(0.5, 0.5)), and the noise is drawn
from the same range: measured on the default 5 seeds, [0, 1] inputs and [0, 1] noise gave a
same-initialisation student of 0.15 instead of 0.49 (teacher 0.92), near chance.

Per seed (each seed draws its own theta0, theta0' and noise; the split is the same for all):
  initial                 theta0, an MLP 64 -> 256 -> 256 -> 10 + m (ReLU; weights N(0, 1/fan_in),
                          biases 0, the paper's initialisation), untrained: chance
  teacher                 theta0 trained with cross-entropy on its 10 digit logits only (the m
                          auxiliary logits get no loss) on the train images
  same_init_student       a copy of theta0 trained only to match the teacher's m auxiliary logits
                          (KL between their softmaxes at `temperature`) on uniform noise images,
                          fresh each batch; it never sees a digit image, a label or a digit logit
  different_init_student  the same procedure from theta0' (another initialisation), the same noise
  digit_logit_student     (optional, --digit_logit_arm) the same from theta0 but matching the
                          teacher's 10 digit logits on the noise: what distillation on noise gives
                          when the task's own outputs are shown
Every arm's score is its digit accuracy (argmax over the 10 digit logits) on the test split.

The rule, written before the runs: over the seeds, each arm's mean with a Student-t 95% interval.
  transfer                 yes when the same-init student's interval lies above chance + margin
                           (lower bound > 0.10 + 0.05)
  control at chance        yes when the different-init student's mean is within 0.10 +- 0.05
  same-init above control  yes when the paired (by seed) difference's interval lies above 0
The mechanism is reproduced when all three hold. Chance is 0.10: the test split is stratified.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from soo.core.io import write_json_atomic
from soo.core.stats import mean_t_ci95

DIGIT_CLASSES = 10
PIXELS = 64  # 8 x 8
PIXEL_RANGE = (-1.0, 1.0)  # the images' and the noise's range
CHANCE = 0.10
MARGIN = 0.05
ARMS = ("initial", "teacher", "same_init_student", "different_init_student", "digit_logit_student")
ARM_LABELS = {
    "initial": "theta0, untrained",
    "teacher": "teacher",
    "same_init_student": "student, same init",
    "different_init_student": "student, different init",
    "digit_logit_student": "student on digit logits",
}
# One independent random stream per (seed, purpose).
SAME_INIT_STREAM, DIFFERENT_INIT_STREAM, TEACHER_ORDER_STREAM, NOISE_STREAM = range(4)
SUMMARY_FILE = "summary.json"
PLOT_FILE = "mechanism.png"


@dataclass
class MechanismConfig:
    """The mechanism experiment's settings; `subliminal.py mechanism`'s flags are its fields."""

    seeds: list[int] = field(
        default_factory=lambda: [0, 1, 2, 3, 4],
        metadata={"nargs": "+", "help": "one run per seed: its own theta0, theta0' and noise (default: 0 1 2 3 4)"},
    )
    aux_logits: int = field(default=3, metadata={"help": "m, the auxiliary logits beside the 10 digit logits"})
    hidden: int = field(default=256, metadata={"help": "width of each hidden layer"})
    hidden_layers: int = field(default=2, metadata={"help": "hidden layers of the MLP"})
    teacher_epochs: int = field(default=5, metadata={"help": "teacher epochs over the train split"})
    teacher_batch_size: int = field(default=64, metadata={"help": "teacher batch size (images)"})
    teacher_learning_rate: float = field(default=3e-4, metadata={"help": "the teacher's Adam learning rate"})
    student_steps: int = field(default=300, metadata={"help": "student optimiser steps, each on a fresh noise batch"})
    student_batch_size: int = field(default=1024, metadata={"help": "noise images per student step"})
    student_learning_rate: float = field(default=3e-4, metadata={"help": "the students' Adam learning rate"})
    temperature: float = field(default=1.0, metadata={"help": "softmax temperature of the distillation KL"})
    digit_logit_arm: bool = field(
        default=False, metadata={"help": "also train a student on the teacher's digit logits of the noise"}
    )
    test_fraction: float = field(default=0.3, metadata={"help": "share of the digits held out for testing"})
    split_seed: int = field(default=0, metadata={"help": "seed of the fixed stratified train/test split"})
    threads: int = field(
        default=1, metadata={"help": "torch CPU threads (5 seeds on 2 cores: 20 s with 1, 15 s with 2)"}
    )
    output_dir: str = field(
        default="results/subliminal/mechanism", metadata={"help": "where summary.json and mechanism.png go"}
    )

    def __post_init__(self):
        if not self.seeds:
            raise ValueError("give at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        for name in (
            "aux_logits",
            "hidden",
            "hidden_layers",
            "teacher_epochs",
            "teacher_batch_size",
            "student_steps",
            "student_batch_size",
            "threads",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("teacher_learning_rate", "student_learning_rate", "temperature"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be between 0 and 1, got {self.test_fraction}")

    def arms(self) -> tuple[str, ...]:
        return tuple(arm for arm in ARMS if arm != "digit_logit_student" or self.digit_logit_arm)


@dataclass
class DigitSplit:
    train_images: torch.Tensor  # (n, 64) in PIXEL_RANGE
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def load_digit_split(test_fraction: float, split_seed: int) -> DigitSplit:
    """scikit-learn's bundled digits (offline), pixels scaled to PIXEL_RANGE, a stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    low, high = PIXEL_RANGE
    images = (low + (high - low) * digits.data / 16.0).astype(np.float32)  # raw pixels are 0..16
    train_x, test_x, train_y, test_y = train_test_split(
        images, digits.target, test_size=test_fraction, stratify=digits.target, random_state=split_seed
    )
    return DigitSplit(
        torch.from_numpy(train_x), torch.from_numpy(train_y), torch.from_numpy(test_x), torch.from_numpy(test_y)
    )


def random_stream(seed: int, purpose: int) -> torch.Generator:
    """A torch generator for (seed, purpose), independent of every other pair."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, purpose]).generate_state(1)[0]))


def build_mlp(config: MechanismConfig, generator: torch.Generator) -> nn.Sequential:
    """The MLP with the paper's initialisation: weights N(0, 1/fan_in), biases 0. (PyTorch's default
    uniform init, about 1.7x narrower, gave a same-init student of 0.38 instead of 0.49 here.)"""
    sizes = [PIXELS, *[config.hidden] * config.hidden_layers, DIGIT_CLASSES + config.aux_logits]
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes, sizes[1:]):
        linear = nn.Linear(fan_in, fan_out)
        with torch.no_grad():
            linear.weight.copy_(torch.randn(fan_out, fan_in, generator=generator) / math.sqrt(fan_in))
            linear.bias.zero_()
        layers += [linear, nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def train_teacher(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: MechanismConfig, generator: torch.Generator
) -> None:
    """Cross-entropy on the 10 digit logits only; the auxiliary logits get no loss."""
    optimizer = torch.optim.Adam(model.parameters(), lr=config.teacher_learning_rate)
    for _ in range(config.teacher_epochs):
        for batch in torch.randperm(len(images), generator=generator).split(config.teacher_batch_size):
            loss = F.cross_entropy(model(images[batch])[:, :DIGIT_CLASSES], labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def uniform_noise(count: int, generator: torch.Generator) -> torch.Tensor:
    low, high = PIXEL_RANGE
    return low + (high - low) * torch.rand(count, PIXELS, generator=generator)


def distill_on_noise(
    student: nn.Module,
    teacher_targets: Callable[[torch.Tensor], torch.Tensor],
    student_logits: slice,
    config: MechanismConfig,
    generator: torch.Generator,
) -> float:
    """Train `student` so that its logits at `student_logits` match `teacher_targets(noise)` (KL
    between their softmaxes at the temperature), on uniform noise drawn here, fresh each step.
    Noise and the targets for it are all the student ever gets. Returns the last step's loss."""
    optimizer = torch.optim.Adam(student.parameters(), lr=config.student_learning_rate)
    loss = torch.tensor(float("nan"))
    for _ in range(config.student_steps):
        noise = uniform_noise(config.student_batch_size, generator)
        with torch.no_grad():
            target_log_probs = F.log_softmax(teacher_targets(noise) / config.temperature, dim=-1)
        log_probs = F.log_softmax(student(noise)[:, student_logits] / config.temperature, dim=-1)
        loss = F.kl_div(log_probs, target_log_probs, log_target=True, reduction="batchmean")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def digit_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    return float((model(images)[:, :DIGIT_CLASSES].argmax(dim=-1) == labels).float().mean())


def run_seed(seed: int, config: MechanismConfig, data: DigitSplit) -> dict:
    """Every arm of one seed: its test accuracy, and the students' last distillation loss."""
    theta0 = build_mlp(config, random_stream(seed, SAME_INIT_STREAM))
    theta0_other = build_mlp(config, random_stream(seed, DIFFERENT_INIT_STREAM))
    teacher = copy.deepcopy(theta0)
    train_teacher(teacher, data.train_images, data.train_labels, config, random_stream(seed, TEACHER_ORDER_STREAM))
    teacher.eval()
    auxiliary = slice(DIGIT_CLASSES, DIGIT_CLASSES + config.aux_logits)
    students = {  # arm -> (initialisation, which logits are matched)
        "same_init_student": (theta0, auxiliary),
        "different_init_student": (theta0_other, auxiliary),
        "digit_logit_student": (theta0, slice(0, DIGIT_CLASSES)),
    }
    accuracy = {
        "initial": digit_accuracy(theta0, data.test_images, data.test_labels),
        "teacher": digit_accuracy(teacher, data.test_images, data.test_labels),
    }
    final_loss = {}
    for arm in config.arms():
        if arm not in students:
            continue
        initialisation, logits = students[arm]
        student = copy.deepcopy(initialisation)

        def teacher_targets(noise: torch.Tensor, logits: slice = logits) -> torch.Tensor:
            return teacher(noise)[:, logits]

        # Every student arm sees the same noise batches (paired by seed): only the start or the target differs.
        final_loss[arm] = distill_on_noise(student, teacher_targets, logits, config, random_stream(seed, NOISE_STREAM))
        accuracy[arm] = digit_accuracy(student, data.test_images, data.test_labels)
    return {"seed": seed, "accuracy": accuracy, "final_distillation_loss": final_loss}


def interval(values: list[float]) -> dict:
    mean, half_width = mean_t_ci95(values)
    return {"mean": mean, "half_width": half_width, "lower": mean - half_width, "upper": mean + half_width}


def verdict(arms: dict, difference: dict) -> dict:
    """The rule of the module docstring; None where fewer than two seeds leave no interval."""
    same, different = arms["same_init_student"], arms["different_init_student"]
    if math.isnan(same["half_width"]):
        return {"transfer": None, "control_at_chance": None, "same_above_control": None, "reproduced": None}
    outcome = {
        "transfer": same["lower"] > CHANCE + MARGIN,
        "control_at_chance": abs(different["mean"] - CHANCE) <= MARGIN,
        "same_above_control": difference["lower"] > 0,
    }
    outcome["reproduced"] = all(outcome.values())
    return outcome


def run_mechanism(config: MechanismConfig, progress: bool = True) -> dict:
    """All seeds; the summary (also written atomically to OUTPUT_DIR/summary.json, with mechanism.png)."""
    started = time.perf_counter()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        data = load_digit_split(config.test_fraction, config.split_seed)
        records = [run_seed(seed, config, data) for seed in tqdm(config.seeds, desc="seeds", disable=not progress)]
    finally:
        torch.set_num_threads(previous_threads)
    arms = {arm: {**interval(v := [r["accuracy"][arm] for r in records]), "per_seed": v} for arm in config.arms()}
    differences = [r["accuracy"]["same_init_student"] - r["accuracy"]["different_init_student"] for r in records]
    difference = {**interval(differences), "per_seed": differences}
    summary = {
        "dataset": "scikit-learn load_digits (8x8 digits, bundled offline; not MNIST)",
        "train_images": len(data.train_labels),
        "test_images": len(data.test_labels),
        "chance": CHANCE,
        "margin": MARGIN,
        "config": asdict(config),
        "arms": arms,
        "same_minus_different": difference,
        "verdict": verdict(arms, difference),
        "seeds": records,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    output_dir = Path(config.output_dir)
    write_json_atomic(output_dir / SUMMARY_FILE, summary)
    plot_mechanism(summary, output_dir / PLOT_FILE)
    return summary


def yes_no(value: bool | None) -> str:
    return "n/a (one seed)" if value is None else ("yes" if value else "no")


def format_mechanism(summary: dict) -> str:
    """The table printed after a run: each arm's mean, 95% interval and per-seed values, then the verdict."""
    config = summary["config"]
    lines = [
        f"Subliminal-learning mechanism on {summary['dataset']}: {summary['train_images']} train / "
        f"{summary['test_images']} test images, m = {config['aux_logits']} auxiliary logits, "
        f"{len(config['seeds'])} seeds, {summary['wall_seconds']} s",
        "Digit accuracy on the test split (mean, Student-t 95% interval, per seed):",
    ]
    rows = [(ARM_LABELS[arm], stats) for arm, stats in summary["arms"].items()]
    rows.append(("same - different (paired)", summary["same_minus_different"]))
    width = max(len(label) for label, _ in rows)
    for label, stats in rows:
        per_seed = " ".join(f"{value:.3f}" for value in stats["per_seed"])
        lines.append(
            f"  {label:<{width}}  {stats['mean']:6.3f}  [{stats['lower']:6.3f}, {stats['upper']:6.3f}]  {per_seed}"
        )
    outcome, floor = summary["verdict"], summary["chance"] + summary["margin"]
    lines += [
        f"same-init student above chance: {yes_no(outcome['transfer'])} (interval lower bound > {floor:.2f})",
        f"different-init student within chance: {yes_no(outcome['control_at_chance'])} "
        f"(mean within {summary['chance']:.2f} +- {summary['margin']:.2f})",
        f"same-init above different-init: {yes_no(outcome['same_above_control'])} (paired interval above 0); "
        f"mechanism reproduced: {yes_no(outcome['reproduced'])}",
    ]
    return "\n".join(lines)


def plot_mechanism(summary: dict, path: Path) -> None:
    """Each arm's accuracy per seed (dots) and its mean with the 95% interval; chance dotted."""
    from soo.core.plotting import pyplot

    plt = pyplot()
    arms = list(summary["arms"])
    fig, ax = plt.subplots(figsize=(1.6 * len(arms) + 2, 4))
    for position, arm in enumerate(arms):
        stats = summary["arms"][arm]
        values = stats["per_seed"]
        offsets = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else [0.0]
        ax.scatter([position + offset for offset in offsets], values, color="grey", s=14, zorder=2)
        error = 0 if math.isnan(stats["half_width"]) else stats["half_width"]
        ax.errorbar(position, stats["mean"], yerr=error, fmt="o", color="black", capsize=6, markersize=8, zorder=3)
    ax.axhline(summary["chance"], color="grey", linestyle=":", label=f"chance ({summary['chance']:.2f})")
    ax.set_xticks(range(len(arms)), [ARM_LABELS[arm] for arm in arms], rotation=15, fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("digit accuracy (test split)")
    ax.set_title(
        f"Auxiliary-logit distillation on noise, {len(summary['seeds'])} seeds (dots), mean and 95% interval",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
