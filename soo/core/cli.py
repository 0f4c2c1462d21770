"""From command-line flags to a config, the same way for every entry point.

`CommandParser` builds a command's parser from its config dataclass(es), in the spirit of TRL's
`TrlParser`: it is a `transformers.HfArgumentParser` (every dataclass field is a flag, its
metadata's `help` the flag's help) that also reads `--config FILE.yaml`, a flat mapping of flag
names to values. Values from the file are defaults; flags given on the command line win. Prefix
matching is off (`--out` is not `--output_dir`). `add_commands` gives a command its subcommands,
each a `CommandParser` of its own with its own dataclasses and `--config`.

Field metadata beyond argparse's keywords: `flag` (the flag's name when it is not the field's,
e.g. `--output_dir` for `out_dir`), `type` and `nargs` (they win over the ones the field's type
implies, e.g. `positive_int`), `negative_help` (the help of a True-by-default bool's `--no_X`).

Bad input is answered with one line `error: ...` on stderr and exit status 2 (argparse's own
status for what it checks itself), before any model is loaded. The number types below refuse
what is out of range, and the float types refuse nan and inf too.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys

from transformers import HfArgumentParser

CONFIG_FLAG = "--config"


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


positive_int = _int_at_least(1)
non_negative_int = _int_at_least(0)


def _float_checked(minimum: float, allow_equal: bool):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if value < minimum or (value == minimum and not allow_equal):
            raise argparse.ArgumentTypeError(
                f"must be {'at least' if allow_equal else 'above'} {minimum:g}, got {text}"
            )
        return value

    return parse


positive_float = _float_checked(0.0, allow_equal=False)
non_negative_float = _float_checked(0.0, allow_equal=True)


def fail(message) -> int:
    """Print `error: message` on stderr; return the exit status for bad input."""
    print(f"error: {message}", file=sys.stderr)
    return 2


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks (the scripts' docstrings) and shows a flag's default
    only where it says something: not for on/off flags, None, [], a required flag, or a help text
    that already names its default."""

    def _get_help_string(self, action):
        if (
            action.default is None
            or isinstance(action.default, bool)
            or action.default == []
            or action.required
            or "default" in (action.help or "")
        ):
            return action.help
        return super()._get_help_string(action)


class CommandParser(HfArgumentParser):
    """A command's parser built from its config dataclasses, with `--config FILE.yaml`.

    `reads_config=False` is for a parser whose subcommands read the file (`rl_deception.py run
    --config FILE`), not itself. After parsing, `config_file` is the file read (or None) and
    `file_values` what it set, by destination. Flags are spelled with underscores only, unless
    `hyphen_aliases` keeps HfArgumentParser's `--max-steps` spellings too (finetuning.py, whose
    Trainer flags always accepted them).
    """

    def __init__(self, dataclass_types=(), *, reads_config: bool = True, hyphen_aliases: bool = False, **kwargs):
        kwargs["allow_abbrev"] = False  # `--out` must not silently mean `--output_dir`
        kwargs.setdefault("formatter_class", HelpFormatter)
        self.hyphen_aliases = hyphen_aliases  # read while super().__init__ adds the fields' flags
        super().__init__(dataclass_types, **kwargs)
        self.reads_config = reads_config
        self.config_file: str | None = None
        self.file_values: dict = {}
        if reads_config:
            self.add_argument(
                CONFIG_FLAG,
                metavar="FILE.yaml",
                default=None,
                help="a YAML mapping of flag names (without --) to values, used as defaults; "
                "flags given on the command line win",
            )

    def add_commands(self, **kwargs):
        """The subcommands' action: its `add_parser(name, dataclass_types=..., help=...)` makes a
        CommandParser."""
        kwargs.setdefault("required", True)
        kwargs.setdefault("dest", "command")
        return self.add_subparsers(parser_class=CommandParser, **kwargs)

    def _parse_dataclass_field(self, parser, field: dataclasses.Field):
        metadata = dict(field.metadata)
        flag = metadata.pop("flag", None)
        negative_help = metadata.pop("negative_help", None)
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        if not metadata.get("help") and not (
            default is None or default is dataclasses.MISSING or isinstance(default, bool) or default == []
        ):
            metadata["help"] = "(default: %(default)s)"
        if flag is not None:
            metadata["dest"] = field.name
        # HfArgumentParser names the flag after the field: hand it a field named after the flag.
        renamed = dataclasses.field(
            metadata=metadata,
            **(
                {"default_factory": field.default_factory}
                if field.default_factory is not dataclasses.MISSING
                else {"default": field.default}
            ),
        )
        renamed.name = flag.removeprefix("--") if flag else field.name
        renamed.type = field.type
        first = len(parser._actions)
        HfArgumentParser._parse_dataclass_field(parser, renamed)
        added = parser._actions[first:]
        for key in ("type", "nargs"):  # HfArgumentParser sets these from the field's type: ours win
            if key in field.metadata:
                setattr(added[0], key, field.metadata[key])
        if negative_help is not None and len(added) == 2:  # the bool's --no_X complement
            added[1].help = negative_help
        if not self.hyphen_aliases:
            for action in added:
                for option in [option for option in action.option_strings if "-" in option[2:]]:
                    action.option_strings.remove(option)
                    del parser._option_string_actions[option]

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        if self.reads_config:
            path = _config_path(args)
            if path is not None:
                self._use_file_as_defaults(path)
        namespace, extras = super().parse_known_args(args, namespace)
        # How the values came is not one of them (and no dataclass has a `config` field).
        if self.reads_config and hasattr(namespace, "config"):
            self.config_file = namespace.config
            del namespace.config
        return namespace, extras

    def parse_configs(self, args=None) -> tuple:
        """One instance of each dataclass type from the flags (ValueError from their checks)."""
        namespace = self.parse_args(args)
        return tuple(config_from(dtype, namespace) for dtype in self.dataclass_types)

    def _use_file_as_defaults(self, path: str) -> None:
        from soo.core.io import read_yaml

        try:
            values = read_yaml(path, ValueError, f"{CONFIG_FLAG} {path}")
        except ValueError as error:
            sys.exit(fail(error))
        values = {} if values is None else values
        if not isinstance(values, dict):
            sys.exit(fail(f"{path}: expected a mapping of argument names to values."))
        actions = {
            option[2:]: action
            for action in self._actions
            for option in action.option_strings
            if option.startswith("--") and action.dest not in ("help", "config")
        }
        unknown = sorted(str(key) for key in values if key not in actions)
        if unknown:
            sys.exit(fail(f"{path}: unknown argument(s) {', '.join(unknown)}."))
        defaults = {}
        for key, value in values.items():
            action = actions[key]
            try:
                defaults[action.dest] = _value_from_file(action, value)
            except (argparse.ArgumentTypeError, TypeError, ValueError) as error:
                sys.exit(fail(f"{path}: {key}: {error}"))
            action.required = False  # the file gave it
        self.set_defaults(**defaults)
        self.file_values = defaults


def _config_path(args: list[str]) -> str | None:
    """The value of the last --config in `args` (argparse keeps the last too); None when absent or
    without a value (argparse then says so)."""
    path = None
    for position, arg in enumerate(args):
        if arg == "--":  # what follows is not flags
            break
        if arg.startswith(CONFIG_FLAG + "="):
            path = arg.split("=", 1)[1]
        elif arg == CONFIG_FLAG:
            following = args[position + 1] if position + 1 < len(args) else None
            path = following if following is not None and not following.startswith("-") else None
    return path


def _value_from_file(action: argparse.Action, value):
    """A YAML value checked and converted as the flag would convert it on the command line."""
    if value is None:
        return None
    if action.nargs == 0:  # an on/off flag (store_true, store_false)
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value == bool(action.const)
    if action.nargs in ("+", "*") or isinstance(action.nargs, int):
        return [_item_from_file(action, item) for item in (value if isinstance(value, list) else [value])]
    if isinstance(value, (list, dict)):
        if action.type in (None, str):  # structured text settings (TrainingArguments' report_to, deepspeed)
            return value
        raise ValueError(f"expected one value, got {value!r}")
    return _item_from_file(action, value)


def _item_from_file(action: argparse.Action, item):
    if isinstance(item, dict):
        return item
    text = item if isinstance(item, str) else str(item)
    try:
        converted = action.type(text) if callable(action.type) else text
    except (TypeError, ValueError):  # what argparse says for a plain type such as int or float
        raise ValueError(f"invalid {getattr(action.type, '__name__', repr(action.type))} value: {text!r}") from None
    if action.choices is not None and converted not in action.choices:
        raise ValueError(f"invalid choice {converted!r} (choose from {', '.join(map(str, action.choices))})")
    return converted


def config_from(dtype, namespace: argparse.Namespace, **overrides):
    """`dtype` built from the parsed values of its fields (and `overrides`)."""
    values = {
        field.name: getattr(namespace, field.name)
        for field in dataclasses.fields(dtype)
        if field.init and hasattr(namespace, field.name)
    }
    return dtype(**{**values, **overrides})
