"""Command line: ``gaugelit reproduce`` runs the grid of Figs. 3-4, ``gaugelit summary`` prints it.

    python -m gaugelit reproduce --scale ci                # the CI grid, a few minutes on a CPU
    python -m gaugelit reproduce --scale ci --jobs 0       # the same, one worker process per core
    python -m gaugelit reproduce --scale paper --dry-run   # list the paper's 240 runs
    python -m gaugelit reproduce --scale paper --datasets mnist --seeds 0 1
    python -m gaugelit reproduce --scale paper --shard 3/12  # the third of twelve shares (a job array)
    python -m gaugelit summary --scale ci
    python -m gaugelit ablation --jobs 2                   # the claim-3 study of the learning chapter
    python -m gaugelit mechanism --jobs 2                  # the mechanism study (never/init/every/matched)

Finished runs are skipped, so rerunning the same command resumes an interrupted sweep.
"""
from __future__ import annotations

import argparse
import sys

from .core.environment import results_dir
from .core.environment import scale as env_scale

_GAUGE = {"on": True, "off": False}


def _parser() -> argparse.ArgumentParser:
    from .core.network import ARCHITECTURES
    from .experiments.data import DATASETS
    from .training import OPTIMIZERS

    parser = argparse.ArgumentParser(prog="gaugelit", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("reproduce", help="run the learning experiments of section 4 (Figs. 3-4)",
                         description="Run the grid datasets x architectures x optimizers x gauge "
                                     "fixing x seeds; each finished run is written to "
                                     "OUT/SCALE/RUN-ID.json and skipped when the command is rerun.")
    summ = sub.add_parser("summary", help="print the last epoch of every finished run, averaged over seeds")
    for p in (rep, summ):
        p.add_argument("--scale", choices=("ci", "paper"), default=None,
                       help="ci: small subset and few epochs; paper: section 4.1's settings "
                            "(default: GAUGELIT_SCALE, else ci)")
        p.add_argument("--out", default=None, help="results folder (default: GAUGELIT_RESULTS_DIR, else ./results)")
    rep.add_argument("--datasets", nargs="+", choices=list(DATASETS), help="default: the scale's")
    rep.add_argument("--archs", nargs="+", choices=list(ARCHITECTURES), help="default: the scale's")
    rep.add_argument("--optimizers", nargs="+", choices=list(OPTIMIZERS), help="default: sgd egd")
    rep.add_argument("--gauge", nargs="+", choices=list(_GAUGE), help="gauge fixing; default: off on")
    rep.add_argument("--seeds", nargs="+", type=int, help="default: the scale's")
    rep.add_argument("--epochs", type=int, help="override the scale's number of epochs")
    rep.add_argument("--n-train", type=int, help="override the scale's training-set size")
    rep.add_argument("--n-test", type=int, help="override the scale's test-set size")
    rep.add_argument("--dry-run", action="store_true", help="list the runs and whether each is finished")
    rep.add_argument("--same-code", action="store_true",
                     help="also rerun finished runs that were written by different gaugelit code")
    rep.add_argument("--jobs", type=int, default=1, metavar="N",
                     help="train N runs at once, one worker process each with one BLAS thread "
                          "(0: one per CPU core; default 1: one after another)")
    rep.add_argument("--progress", action="store_true", help="show a progress bar per run (with --jobs 1)")
    rep.add_argument("--shard", metavar="K/N", default=None,
                     help="run only the K-th of N interleaved shares of the grid (1 <= K <= N), e.g. "
                          "one share per task of a SLURM job array; all shares write into one --out")
    rep.add_argument("--batch-models", action=argparse.BooleanOptionalAction, default=None,
                     help="train the runs of a grid cell (seeds x gauge fixing) at once, one file per "
                          "run still (default: on with the CuPy backend, off on the CPU)")
    # listed for --help; main() hands its arguments to gaugelit.experiments.ablation.main
    sub.add_parser("ablation", help="the paired claim-3 study of section 4.1's unsaid choices "
                                    "(gaugelit ablation --help)")
    sub.add_parser("mechanism", help="which part of gauge fixing causes its effect: balancing never, once, "
                                     "every step, or matched rates (gaugelit mechanism --help)")
    return parser


def _settings(args):
    from .experiments import grid

    settings = grid.settings_for(args.scale or env_scale())
    changes = {"datasets": args.datasets, "architectures": args.archs, "optimizers": args.optimizers,
               "seeds": args.seeds, "epochs": args.epochs, "n_train": args.n_train, "n_test": args.n_test,
               "gauge_fix": [_GAUGE[g] for g in args.gauge] if args.gauge else None}
    changes = {k: (tuple(v) if isinstance(v, list) else v) for k, v in changes.items() if v is not None}
    return settings.replace(**changes)


def reproduce(args) -> int:
    from pathlib import Path

    from .experiments import grid, runfiles, sweep

    settings = _settings(args)
    out = Path(args.out) if args.out else results_dir()
    runs = settings.runs()
    if args.shard is not None:
        runs = grid.shard_runs(runs, args.shard, _batch_models(args))
    if args.dry_run:
        folder = out / settings.scale
        finished = 0
        for run in runs:
            done = runfiles.is_finished(folder / f"{run.run_id}.json", grid.run_settings(run, settings),
                                        same_code=args.same_code)
            finished += done
            print(f"{'finished' if done else 'to run  '}  {folder / (run.run_id + '.json')}")
        print(f"{len(runs)} runs at scale {settings.scale!r} ({settings.epochs} epochs, "
              f"n_train={settings.n_train or 'all'}): {finished} finished, {len(runs) - finished} to run")
        return 0
    sweep.reproduce(settings, out, runs=runs, jobs=args.jobs, same_code=args.same_code, progress=args.progress,
                    batch_models=_batch_models(args))
    return 0


def _batch_models(args) -> bool:
    from .core.backend import default_backend
    return default_backend().__name__ == "cupy" if args.batch_models is None else args.batch_models


def summary(args) -> int:
    from pathlib import Path

    from .experiments import runfiles, summaries

    folder = (Path(args.out) if args.out else results_dir()) / (args.scale or env_scale())
    rows = summaries.final_table(runfiles.load_results(folder))
    if not rows:
        print(f"no finished runs in {folder}")
        return 1
    header = ("dataset", "architecture", "optimizer", "gauge_fix", "seeds", "epochs", "reg_loss",
              "train_error", "test_error", "wall_seconds")
    print("  ".join(f"{h:>13}" for h in header))
    for row in rows:
        print("  ".join(f"{row[h]:>13.4f}" if isinstance(row[h], float) else f"{str(row[h]):>13}"
                        for h in header))
    return 0


def _one_line(err: BaseException) -> str:
    """An expected failure as one line: the message, and for an OSError the path and a fix."""
    if isinstance(err, OSError) and not type(err).__module__.startswith("gaugelit") and err.filename:
        fixes = {"PermissionError": "make it writable or pass another --out",
                 "NotADirectoryError": "part of the path is a file; pass another --out",
                 "FileExistsError": "a file is in the way; move it or pass another --out",
                 "IsADirectoryError": "a folder is in the way; move it",
                 "FileNotFoundError": "check the path"}
        fix = fixes.get(type(err).__name__, "free disk space or pass another --out")
        return f"{err.filename}: {err.strerror or err}; {fix}"
    return " ".join(str(err).split()) or type(err).__name__


def main(argv=None) -> int:
    """Run the command line; every expected failure is one line on stderr and exit status 2
    (130 after Ctrl-C), never a traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["ablation"]:
        from .experiments.ablation import main as ablation_main
        return ablation_main(argv[1:])
    if argv[:1] == ["mechanism"]:
        from .experiments.mechanism import main as mechanism_main
        return mechanism_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        return {"reproduce": reproduce, "summary": summary}[args.command](args)
    except KeyboardInterrupt:
        print(f"gaugelit {args.command}: interrupted; finished runs are saved, rerun the same "
              f"command to resume", file=sys.stderr)
        return 130
    except (ValueError, OSError) as err:   # bad settings or data, permissions, disk, paths
        print(f"gaugelit {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
