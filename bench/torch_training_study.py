"""The larger version of the chapter's plain / ENorm-one-sweep / GaugeFix comparison (issue 23,
section 4; gaugelit.torch_training.LARGER: 10000 MNIST training images, 2 epochs, 5 seeds, both
models): trains the runs missing in ``--out`` (one JSON file per run, written atomically, so a
stopped study resumes), one thread, then prints the paired table.

    GAUGELIT_DATA_DIR=... OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 \\
        python bench/torch_training_study.py [--out results/torch-training]
"""
import argparse
import warnings

import torch

import gaugelit.torch as gt
from gaugelit import torch_training as tt


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/torch-training")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="IProgress not found")
    torch.set_num_threads(1)
    tt.run_missing(tt.LARGER, args.out, gt)
    print(tt.paired_table(tt.load_runs(tt.LARGER, args.out))[0])


if __name__ == "__main__":
    main()
