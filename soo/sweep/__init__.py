"""Sweeps: grids of fine-tuning settings run as train -> evaluate cells.

grid   the sweep spec (YAML): base config, grid, control cells; expansion into named cells
run    a cell's train -> evaluate children, its state files, the local executor, status
slurm  submitting the cells not done as one throttled `sbatch --array` job (submit_sweep.sh)
report  seed means and intervals per setting, controls, heatmaps, the best-of-many warning
"""

from soo.sweep.grid import SweepCell, SweepSpec, SweepSpecError, cell_name, finetuning_flags, load_sweep

__all__ = ["SweepCell", "SweepSpec", "SweepSpecError", "cell_name", "finetuning_flags", "load_sweep"]
