"""Every command line answers bad input the same way: a line `error: ...` on stderr, exit status 2,
no traceback, and nothing written.

The commands run as a new user would run them (subprocesses from the repository root), all at
once, and every bad input is one that must be refused before any model is loaded, so the whole
file takes seconds. Each case gets a folder of its own; what is in it before the run must be all
that is in it after.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A folder that cannot be created: its parent "blocker" is a regular file.
UNWRITABLE = "{d}/blocker/out"


def _blocker(d: Path) -> None:
    (d / "blocker").write_text("a file where a folder would have to be\n", encoding="utf-8")


def _identical_pairs(d: Path) -> None:
    (d / "pairs.jsonl").write_text(
        '{"self_prompt": "You x", "other_prompt": "Bob x"}\n{"self_prompt": "You y", "other_prompt": "You y"}\n',
        encoding="utf-8",
    )


def _adapter_and_base(d: Path) -> None:
    _blocker(d)
    (d / "adapter").mkdir()
    (d / "adapter" / "adapter_config.json").write_text("{}\n", encoding="utf-8")
    (d / "base").mkdir()  # a local "model" folder: the merge must fail before it is read


# name: (command after the interpreter, setup of the case's folder, text the error line must contain).
# A "{d}" in the command is the case's folder. One or two cases per command: each subprocess costs
# about 2 s of CPU for `import torch`; more cases of the same kind run in-process below.
CASES = {
    "generate_data: output folder cannot be created": (
        [
            "generate_data.py",
            "--n",
            "5",
            "--output_file",
            "/proc/soo-no-such-dir/pairs.jsonl" if os.path.isdir("/proc/self") else UNWRITABLE + "/pairs.jsonl",
        ],
        _blocker,
        "cannot write",
    ),
    "evaluate: pairs file with an identical pair": (
        ["evaluate.py", "--pairs_path", "{d}/pairs.jsonl", "--output_dir", "{d}/eval"],
        _identical_pairs,
        "pairs.jsonl, line 2: 'self_prompt' and 'other_prompt' are identical",
    ),
    "evaluate: output folder cannot be created": (
        ["evaluate.py", "--output_dir", UNWRITABLE],
        _blocker,
        "cannot create the output folder",
    ),
    "rl_deception: report on a missing folder": (
        ["rl_deception.py", "report", "--output_dir", "{d}/no-results"],
        None,
        "no seed_*/results_*.json",
    ),
    "rl_deception: output folder cannot be created": (
        ["rl_deception.py", "run", "--quick", "--output_dir", UNWRITABLE],
        _blocker,
        "cannot create the output folder",
    ),
    "rl_deception: bad number": (
        ["rl_deception.py", "all", "--quick", "--jobs", "0", "--output_dir", "{d}/rl"],
        None,
        "--jobs",
    ),
    "merge: output folder cannot be created": (
        ["-m", "soo.tools.merge", "{d}/adapter", "--model_name_or_path", "{d}/base", "--output_dir", UNWRITABLE],
        _adapter_and_base,
        "cannot create the output folder",
    ),
    "tiny_model: output folder cannot be created": (
        ["-m", "soo.tools.tiny_model", UNWRITABLE],
        _blocker,
        "cannot create the output folder",
    ),
    "benchmarks.training: output file cannot be written": (
        ["-m", "benchmarks.training", "--output_file", UNWRITABLE + "/b.md"],
        _blocker,
        "cannot write the output file",
    ),
    "benchmarks.generation: missing model folder": (
        ["-m", "benchmarks.generation", "--model_name_or_path", "{d}/no-model", "--output_file", "{d}/g.md"],
        None,
        "no-model",
    ),
    "benchmarks.peak_memory: output file cannot be written": (
        ["-m", "benchmarks.peak_memory", "--output_file", UNWRITABLE + "/p.md"],
        _blocker,
        "cannot write the output file",
    ),
}


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    return {
        str(path.relative_to(folder)): None if path.is_dir() else path.read_bytes()
        for path in sorted(folder.rglob("*"))
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run every case at once: name -> (completed process, folder contents before, after)."""
    root = tmp_path_factory.mktemp("cli-errors")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    prepared = {}
    for index, (name, (command, setup, _)) in enumerate(CASES.items()):
        folder = root / f"case{index}"
        folder.mkdir()
        if setup:
            setup(folder)
        prepared[name] = (folder, [part.replace("{d}", str(folder)) for part in command], _snapshot(folder))

    def run(name):
        folder, command, before = prepared[name]
        completed = subprocess.run(
            [sys.executable, *command], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )
        return name, (completed, before, _snapshot(folder))

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return dict(pool.map(run, CASES))


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_error_line_exit_2_and_writes_nothing(runs, name):
    completed, before, after = runs[name]
    stderr = completed.stderr
    assert completed.returncode == 2, f"exit {completed.returncode}\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    # Ours: a line that starts with "error: "; argparse's own: "PROG: error: ".
    error_lines = [line for line in stderr.splitlines() if re.match(r"(\S+( \w+)?: )?error: \S", line)]
    assert len(error_lines) == 1, stderr[-3000:]
    assert CASES[name][2] in error_lines[0], error_lines[0]
    assert after == before, f"the run wrote {sorted(set(after) - set(before))}"


# The same checks in-process (the main functions return or exit with 2): more bad inputs, no startup cost.
IN_PROCESS = {
    "evaluate: missing adapter folder": (
        "evaluate",
        ["--adapters", "{d}/no-adapter", "--output_dir", "{d}/eval"],
        None,
        "does not exist",
    ),
    "evaluate: adapter folder without an adapter": (
        "evaluate",
        ["--adapters", "{d}", "--output_dir", "{d}/eval"],
        None,
        "has no adapter_config.json",
    ),
    "evaluate: output folder is a file": ("evaluate", ["--output_dir", "{d}/blocker"], _blocker, "is not a folder"),
    "merge: missing adapter folder": ("soo.tools.merge", ["{d}/no-adapter"], None, "does not exist"),
    "merge: missing base model folder": (
        "soo.tools.merge",
        ["{d}/adapter", "--model_name_or_path", "{d}/no-model"],
        _adapter_and_base,
        "no-model",
    ),
    "tiny_model: output folder is a file": ("soo.tools.tiny_model", ["{d}/blocker"], _blocker, "is not a folder"),
    "benchmarks.efficiency: output file cannot be written": (
        "benchmarks.efficiency",
        ["--output_file", UNWRITABLE + "/e.md"],
        _blocker,
        "cannot write the output file",
    ),
    "benchmarks.generation: output file is a folder": (
        "benchmarks.generation",
        ["--output_file", "{d}"],
        None,
        "it is a folder",
    ),
    "benchmarks.generation: unknown device": (
        "benchmarks.generation",
        ["--device", "nonsense", "--output_file", "{d}/g.md"],
        None,
        "--device nonsense",
    ),
    "rl_deception: no results under a file": (
        "rl_deception",
        ["report", "--output_dir", "{d}/blocker"],
        _blocker,
        "no seed_*/results_*.json",
    ),
}


@pytest.mark.parametrize("name", list(IN_PROCESS))
def test_bad_input_in_process_is_one_error_line_and_code_2(name, tmp_path, capsys):
    import importlib

    module, argv, setup, expected = IN_PROCESS[name]
    if setup:
        setup(tmp_path)
    before = _snapshot(tmp_path)
    try:
        code = importlib.import_module(module).main([part.replace("{d}", str(tmp_path)) for part in argv])
    except SystemExit as exit_info:
        code = exit_info.code
    stderr = capsys.readouterr().err
    assert code == 2, stderr[-3000:]
    error_lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and expected in error_lines[0], stderr[-3000:]
    assert _snapshot(tmp_path) == before


# Flags renamed to the one convention (underscores, --model_name_or_path, --output_dir, --output_file)
# keep no alias, not even as an argparse abbreviation of the new name.
OLD_FLAGS = [
    ("generate_data", ["--out", "x.jsonl"]),
    ("evaluate", ["--out_dir", "x"]),
    ("rl_deception", ["run", "--out_dir", "x"]),
    ("soo.tools.merge", ["adapter", "--out", "x"]),
    ("benchmarks.training", ["--model", "x"]),
    ("benchmarks.training", ["--soo-layer", "2"]),
    ("benchmarks.efficiency", ["--report", "x.md"]),
    ("benchmarks.generation", ["--max-new-tokens", "4"]),
    ("benchmarks.peak_memory", ["--report", "x.md"]),
    ("benchmarks.__main__", ["--skip-generation"]),
]


@pytest.mark.parametrize("module, argv", OLD_FLAGS, ids=[f"{m} {' '.join(a)}" for m, a in OLD_FLAGS])
def test_old_flag_names_are_refused(module, argv, capsys):
    import importlib

    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main(argv)
    assert exit_info.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize(
    "module, argv, flag",
    [
        ("benchmarks.efficiency", ["--matmul_size", "0"], "--matmul_size"),
        ("benchmarks.generation", ["--batch_sizes", "16", "-1"], "--batch_sizes"),
        ("benchmarks.training", ["--repeats", "zero"], "--repeats"),
        ("evaluate", ["--batch_size", "0"], "--batch_size"),
        ("rl_deception", ["run", "--eval_episodes", "0"], "--eval_episodes"),
        ("rl_deception", ["run", "--soo_weight", "nan"], "--soo_weight"),
        ("rl_deception", ["all", "--seeds", "3-1"], "--seeds"),
        ("rl_deception", ["all", "--seeds", "0-x"], "--seeds"),
        ("rl_deception", ["run", "--soo_definitions", "mine"], "--soo_definitions"),
    ],
)
def test_bad_numbers_are_refused_by_the_parser(module, argv, flag, capsys):
    import importlib

    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main(argv)
    assert exit_info.value.code == 2
    assert f"error: argument {flag}" in capsys.readouterr().err


def test_evaluate_help_says_what_no_capability_does():
    import evaluate

    help_text = " ".join(evaluate.build_parser().format_help().split("\noptions:", 1)[1].split())
    entry = help_text[help_text.index("--no_capability ") : help_text.index("--mt_bench_export ")]
    assert "skip the capability measures" in entry and "default" not in entry, entry
