"""Shared fixtures: an offline tokenizer, tiny random-weight models, generated pairs.

Everything here is built locally in seconds; no test downloads anything.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# The datasets library's Arrow and map caches of the tests' pair files: a fresh folder per run,
# not the user's ~/.cache/huggingface/datasets.
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="soo-test-datasets-"))

import pytest  # noqa: E402
import torch  # noqa: E402

from soo.core.io import write_jsonl_atomic  # noqa: E402
from soo.data.pair_generation import generate_pairs  # noqa: E402
from soo.tools.tiny_model import build_tiny_model, build_tokenizer  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def make_model(tokenizer):
    """make_model(arch, seed=0) -> a fresh tiny model of that architecture."""

    def factory(arch: str = "llama", seed: int = 0):
        return build_tiny_model(arch, vocab_size=len(tokenizer), seed=seed)

    return factory


@pytest.fixture(scope="session")
def train_records():
    return generate_pairs(n=64, seed=0, split="train")


@pytest.fixture(scope="session")
def test_records():
    return generate_pairs(n=32, seed=0, split="test")


@pytest.fixture(scope="session")
def data_files(tmp_path_factory, train_records, test_records):
    """(train.jsonl, test.jsonl) written once for the CLI tests."""
    folder = tmp_path_factory.mktemp("pairs")
    return (
        write_jsonl_atomic(folder / "train.jsonl", train_records),
        write_jsonl_atomic(folder / "test.jsonl", test_records),
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny Llama saved with its tokenizer, loadable by path like a hub checkpoint."""
    from soo.tools.tiny_model import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", arch="llama")


@pytest.fixture(scope="session")
def tiny_adapter_dir(tiny_model_dir, data_files, tmp_path_factory):
    """A 3-step SOO adapter of the tiny Llama, trained once by finetuning.py."""
    import finetuning

    out = tmp_path_factory.mktemp("adapter") / "run"
    code = finetuning.main(
        [
            "--model_name_or_path",
            str(tiny_model_dir),
            "--data_path",
            str(data_files[0]),
            "--soo_layers",
            "2",
            "--max_steps",
            "3",
            "--use_cpu",
            "--output_dir",
            str(out),
            "--report_to",
            "none",
            "--learning_rate",
            "5e-2",
            "--disable_tqdm",
            "true",
        ]
    )
    assert code == 0
    return out
