"""Every entry point goes from flags to its config the same way (soo.core.cli.CommandParser).

Walks every command and subcommand: each config dataclass field is a flag, `--help` exits 0,
`--config FILE.yaml` sets values the parsed config then holds and a flag on the command line
overrides them, prefix matching is off, and no root script builds a bare argparse parser.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
from pathlib import Path

import pytest
import yaml

from soo.core.cli import CommandParser, config_from, non_negative_float, positive_float, positive_int

REPO = Path(__file__).resolve().parent.parent


def _parser_factories():
    import deception_experiment
    import evaluate
    import generate_data
    import rl_deception
    import subliminal
    import sweep
    from soo.train.config import build_parser as finetuning_parser

    return {
        "generate_data.py": generate_data.build_parser,
        "finetuning.py": finetuning_parser,
        "evaluate.py": evaluate.build_parser,
        "rl_deception.py": rl_deception.build_parser,
        "deception_experiment.py": deception_experiment.build_parser,
        "sweep.py": sweep.build_parser,
        "subliminal.py": subliminal.build_parser,
    }


# Every command (script, subcommand): the arguments it needs besides the one tested, and one setting
# to try through --config: (flag, value in the file, value on the command line, what the flag gives).
COMMANDS = {
    ("generate_data.py", None): ([], ("n", 52, "7", 7)),
    ("finetuning.py", None): ([], ("lora_r", 4, "6", 6)),
    ("evaluate.py", None): ([], ("batch_size", 3, "5", 5)),
    ("rl_deception.py", "run"): ([], ("eval_episodes", 7, "9", 9)),
    ("rl_deception.py", "all"): ([], ("soo_weight", 0.5, "2", 2.0)),
    ("rl_deception.py", "report"): ([], ("output_dir", "from-file", "from-flag", "from-flag")),
    ("deception_experiment.py", "organism"): ([], ("steps", 3, "4", 4)),
    ("deception_experiment.py", "run"): (["--organism", "base"], ("max_steps", 3, "4", 4)),
    ("deception_experiment.py", "separation"): ([], ("n", 3, "5", 5)),
    ("deception_experiment.py", "report"): (["--organisms", "base"], ("output_dir", "a", "b", "b")),
    ("sweep.py", "run"): (["spec.yaml"], ("jobs", 3, "2", 2)),
    ("sweep.py", "status"): (["spec.yaml"], None),
    ("sweep.py", "cells"): (["spec.yaml"], None),
    ("sweep.py", "report"): (["spec.yaml"], None),
    ("sweep.py", "submit"): (["spec.yaml"], ("throttle", 3, "2", 2)),
    ("sweep.py", "run-cell"): (["spec.yaml", "--index", "0"], None),
    ("subliminal.py", "mechanism"): ([], ("aux_logits", 4, "5", 5)),
    ("subliminal.py", "generate"): (["--output_file", "raw.jsonl"], ("n_prompts", 3, "4", 4)),
    ("subliminal.py", "filter"): (["--input_file", "a", "--output_file", "b"], ("max_kept", 3, "4", 4)),
    ("subliminal.py", "train"): (["--train_file", "a", "--output_dir", "b"], ("lora_r", 3, "4", 4)),
    ("subliminal.py", "evaluate"): ([], ("samples_per_question", 3, "4", 4)),
    ("subliminal.py", "run"): ([], ("n_prompts", 3, "4", 4)),
    ("subliminal.py", "report"): ([], ("output_dir", "a", "b", "b")),
    ("subliminal.py", "deception"): ([], ("eval_n", 3, "4", 4)),
    ("subliminal.py", "deception-report"): ([], ("output_dir", "a", "b", "b")),
}


def _subcommands(parser) -> dict:
    actions = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    return actions[0].choices if actions else {}


def _leaf(script: str, command: str | None) -> CommandParser:
    parser = _parser_factories()[script]()
    return parser if command is None else _subcommands(parser)[command]


def _argv(command: str | None, *rest: str) -> list[str]:
    return ([command] if command else []) + list(rest)


def test_the_table_names_every_command():
    found = set()
    for script, factory in _parser_factories().items():
        parser = factory()
        names = list(_subcommands(parser)) or [None]
        found |= {(script, name) for name in names}
    assert found == set(COMMANDS)


@pytest.mark.parametrize("script", sorted(_parser_factories()))
def test_every_parser_and_subparser_is_the_helper_with_prefix_matching_off(script):
    parser = _parser_factories()[script]()
    for each in [parser, *_subcommands(parser).values()]:
        assert isinstance(each, CommandParser) and each.allow_abbrev is False, each.prog
        assert each.reads_config == (not _subcommands(each)), each.prog  # commands, or their subcommands


@pytest.mark.parametrize("script, command", sorted(COMMANDS, key=str))
def test_every_config_field_is_a_flag(script, command):
    parser = _leaf(script, command)
    destinations = {action.dest for action in parser._actions if action.option_strings}
    for dtype in parser.dataclass_types:
        missing = [f.name for f in dataclasses.fields(dtype) if f.init and f.name not in destinations]
        assert not missing, f"{script} {command or ''}: {dtype.__name__} fields without a flag: {missing}"


@pytest.mark.parametrize("script, command", sorted(COMMANDS, key=str))
def test_help_exits_0(script, command, capsys):
    parser = _parser_factories()[script]()
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(_argv(command, "--help"))
    assert exit_info.value.code == 0
    assert "--config FILE.yaml" in capsys.readouterr().out


@pytest.mark.parametrize(
    "script, command", [key for key, (_, setting) in COMMANDS.items() if setting], ids=lambda value: str(value)
)
def test_config_file_sets_values_and_flags_win(script, command, tmp_path):
    needed, (flag, in_file, on_command_line, expected) = COMMANDS[(script, command)]
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({flag: in_file}), encoding="utf-8")
    leaf = _leaf(script, command)
    dest = next(action.dest for action in leaf._actions if f"--{flag}" in action.option_strings)

    from_file = _parser_factories()[script]().parse_args(_argv(command, *needed, "--config", str(config)))
    assert getattr(from_file, dest) == in_file
    assert not hasattr(from_file, "config"), "the file's path is not a setting"
    for dtype in leaf.dataclass_types:  # the config built from the flags holds the file's value
        if dest in {f.name for f in dataclasses.fields(dtype)}:
            assert getattr(config_from(dtype, from_file), dest) == in_file

    overridden = _parser_factories()[script]().parse_args(
        _argv(command, *needed, "--config", str(config), f"--{flag}", on_command_line)
    )
    assert getattr(overridden, dest) == expected
    # the flag wins wherever it stands
    first = _parser_factories()[script]().parse_args(
        _argv(command, *needed, f"--{flag}={on_command_line}", f"--config={config}")
    )
    assert getattr(first, dest) == expected


@pytest.mark.parametrize("script, command", sorted(COMMANDS, key=str))
def test_prefix_matching_is_off(script, command, capsys):
    needed, _ = COMMANDS[(script, command)]
    leaf = _leaf(script, command)
    flags = {option for action in leaf._actions for option in action.option_strings}
    longest = max(flags, key=len)
    abbreviated = longest[:-2]
    assert abbreviated not in flags
    with pytest.raises(SystemExit) as exit_info:
        _parser_factories()[script]().parse_args(_argv(command, *needed, abbreviated, "1"))
    assert exit_info.value.code == 2
    assert "error: unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, expected",
    [
        ("nope: 1\n", "unknown argument(s) nope"),
        ("n: 0\n", "n: must be at least 1, got 0"),
        ("protocol: sometimes\n", "protocol: invalid choice 'sometimes'"),
        ("latent_all_layers: maybe\n", "latent_all_layers:"),
        ("n: [1, 2]\n", "n: expected one value"),
        ("- n\n", "expected a mapping"),
        ("n: [1\n", "YAML syntax error"),
    ],
    ids=["unknown-key", "out-of-range", "bad-choice", "bad-bool", "list-for-one", "not-a-mapping", "syntax"],
)
def test_a_bad_config_file_is_one_error_line_and_exit_2(content, expected, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(content, encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        _parser_factories()["evaluate.py"]().parse_args(["--config", str(config)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err, err


def test_a_missing_config_file_in_a_subcommand_is_one_error_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parser_factories()["rl_deception.py"]().parse_args(["run", "--config", str(tmp_path / "none.yaml")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err == f"error: --config {tmp_path / 'none.yaml'}: no such file.\n"


def test_a_file_can_give_a_required_flag_and_a_no_flag(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("organism: base\nseeds: [4, 5]\n", encoding="utf-8")
    args = _parser_factories()["deception_experiment.py"]().parse_args(["run", "--config", str(config)])
    assert args.organism_dir == "base" and args.seeds == [4, 5]
    config.write_text("no_capability: true\n", encoding="utf-8")
    assert _parser_factories()["evaluate.py"]().parse_args(["--config", str(config)]).capability is False


def test_rl_all_forwards_what_the_file_set_to_each_seed(tmp_path):
    import rl_deception

    config = tmp_path / "c.yaml"
    config.write_text("quick: true\nsoo_weight: 0.5\nvariants: [basic]\nprotocol: co-trained\n", encoding="utf-8")
    args = rl_deception.build_parser().parse_args(["all", "--config", str(config), "--seeds", "0-1"])
    seed_args = rl_deception.build_parser().parse_args(["run", *rl_deception.forwarded_options(args)])
    for name in (f.name for f in dataclasses.fields(rl_deception.SeedOptions)):
        assert getattr(seed_args, name) == getattr(args, name), name
    assert seed_args.quick is True and seed_args.soo_weight == 0.5 and seed_args.variants == ["basic"]


def test_evaluate_defaults_are_evalconfigs():
    from soo.eval.config import EvalConfig

    args = _parser_factories()["evaluate.py"]().parse_args([])
    assert config_from(EvalConfig, args) == EvalConfig()


@pytest.mark.parametrize(
    "parse, text",
    [
        (positive_float, "inf"),
        (positive_float, "nan"),
        (non_negative_float, "-inf"),
        (non_negative_float, "nan"),
        (positive_float, "0"),
        (non_negative_float, "-1"),
        (positive_int, "0"),
        (positive_int, "1.5"),
    ],
)
def test_number_types_refuse_out_of_range_and_non_finite(parse, text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse(text)


# --- no command builds a parser of its own ----------------------------------------------------


def bare_parsers(path: Path) -> list[str]:
    """The calls in `path` that build an argparse or HfArgumentParser parser directly."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("ArgumentParser", "HfArgumentParser", "TrlParser"):
                found.append(f"{path.name}:{node.lineno} {name}(...)")
    return found


def test_no_command_builds_a_bare_parser():
    # The root scripts and the `python -m` commands (soo.tools.*, benchmarks.*) alike; core's
    # helper is the one place allowed to subclass HfArgumentParser.
    scripts = (
        sorted(REPO.glob("*.py"))
        + sorted((REPO / "benchmarks").rglob("*.py"))
        + sorted(path for path in (REPO / "soo").rglob("*.py") if path != REPO / "soo" / "core" / "cli.py")
    )
    assert len(scripts) > 20
    found = [call for path in scripts for call in bare_parsers(path)]
    assert not found, found
    # A root script that parses flags is one of the walked entry points.
    parsing = {
        path.name
        for path in REPO.glob("*.py")
        if "parse_args" in path.read_text(encoding="utf-8") or "build_parser" in path.read_text(encoding="utf-8")
    }
    assert parsing <= set(_parser_factories()), parsing - set(_parser_factories())


def test_the_bare_parser_check_can_fail(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("import argparse\n\ndef main():\n    parser = argparse.ArgumentParser()\n")
    assert bare_parsers(script) == ["s.py:4 ArgumentParser(...)"]


# The `python -m` commands: not config-dataclass commands, but the same parser (--config, no prefixes).
MODULE_COMMANDS = [
    "benchmarks.__main__",
    "benchmarks.efficiency",
    "benchmarks.generation",
    "benchmarks.gpu_check",
    "benchmarks.peak_memory",
    "benchmarks.protocol",
    "benchmarks.rl_speed",
    "benchmarks.scoring",
    "benchmarks.training",
    "soo.tools.lm_eval_compare",
    "soo.tools.memory",
    "soo.tools.merge",
    "soo.tools.tiny_model",
    "soo.eval.inspect_task",
]


def test_the_module_command_list_is_complete():
    defined = {
        ".".join(path.relative_to(REPO).with_suffix("").parts)
        for folder in ("benchmarks", "soo")
        for path in (REPO / folder).rglob("*.py")
        if "\ndef main(" in path.read_text(encoding="utf-8")
    }
    assert defined == set(MODULE_COMMANDS)


@pytest.mark.parametrize("module", MODULE_COMMANDS)
def test_module_commands_take_config_and_refuse_prefixes(module, capsys):
    import importlib

    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--config FILE.yaml" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["--conf", "x.yaml"])  # a prefix of --config is not --config
    assert exit_info.value.code == 2
