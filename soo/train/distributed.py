"""Process-group set-up that the HF Trainer does not do for us.

1. `srun` launches (one task per GPU, no torchrun): Slurm describes the task in SLURM_PROCID,
   SLURM_NTASKS and SLURM_LOCALID; torch.distributed reads RANK, WORLD_SIZE and LOCAL_RANK.
   We launch with srun rather than torchrun so that Slurm's USR1/TERM reach the training
   processes directly (torchrun dies on USR1 and gives its workers 30 s after TERM).
2. DeepSpeed on CPU: the process group must use gloo and exist before the model is built
   (ZeRO-3 partitions parameters while loading).
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("soo")


def export_torch_env_from_slurm(environ=os.environ) -> bool:
    """Fill RANK/WORLD_SIZE/LOCAL_RANK/LOCAL_WORLD_SIZE from an srun step; True if it did.

    Only inside an srun job step with more than one task and no launcher's variables already
    set (torchrun sets RANK itself). MASTER_ADDR/MASTER_PORT come from the batch script
    (first host of the node list); without them rendezvous would have no address, so say so.
    """
    if "RANK" in environ or "SLURM_STEP_ID" not in environ:
        return False
    tasks = int(environ.get("SLURM_STEP_NUM_TASKS", environ.get("SLURM_NTASKS", "1")))
    if tasks <= 1:
        return False
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in environ]
    if missing:
        raise RuntimeError(
            f"Launched by srun with {tasks} tasks but {' and '.join(missing)} not set: export them in the "
            "batch script (MASTER_ADDR = first host of `scontrol show hostnames $SLURM_JOB_NODELIST`)."
        )
    environ["RANK"] = environ["SLURM_PROCID"]
    environ["WORLD_SIZE"] = str(tasks)
    environ["LOCAL_RANK"] = environ.get("SLURM_LOCALID", "0")
    tasks_per_node = environ.get("SLURM_NTASKS_PER_NODE", "").split("(")[0]
    if tasks_per_node.isdigit():
        environ["LOCAL_WORLD_SIZE"] = tasks_per_node
    return True


def init_deepspeed_on_cpu(training_args) -> None:
    """Create the gloo process group DeepSpeed needs on CPU, before the model is loaded."""
    if not (training_args.deepspeed and training_args.use_cpu):
        return
    import deepspeed

    # DeepSpeed keeps its own communication state: even when TrainingArguments already made a torch
    # process group, ZeRO-3's config reads the world size from deepspeed.comm (1 until initialised).
    if not deepspeed.comm.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("LOCAL_RANK", "0")
        deepspeed.init_distributed(dist_backend="gloo")


def zero_stage(training_args) -> int:
    """The ZeRO stage of the run's DeepSpeed config (0 without DeepSpeed)."""
    if not training_args.deepspeed:
        return 0
    plugin = getattr(training_args, "hf_deepspeed_config", None)
    if plugin is not None:
        return int(plugin.config.get("zero_optimization", {}).get("stage", 0))
    import json

    config = training_args.deepspeed
    if isinstance(config, str):
        with open(config, encoding="utf-8") as handle:
            config = json.load(handle)
    return int(config.get("zero_optimization", {}).get("stage", 0))


def exit_process(code: int) -> None:
    """End a launcher script: under several processes, together and without C++ teardown.

    Seen on CPU/gloo with DeepSpeed (2 ranks, about 1 complete run in 10): a rank aborted during
    interpreter shutdown ("terminate called without an active exception"), after the adapter was
    saved; srun then reported the job failed, and an exit 75 was not requeued. destroy_process_group
    did not help; a barrier and os._exit, which skips those destructors, did (0 aborts in 20 runs).
    Everything the run writes is closed by then (the Trainer closes its loggers at train end).
    """
    import sys

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
