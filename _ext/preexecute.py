"""Execute the book's notebook chapters into Jupyter Book's execution cache, several at once.

`jupyter-book build` (execute_notebooks: cache) executes each chapter whose code is not in
``_build/.jupyter_cache`` yet, one after another. Run first, this script fills the same cache with
one chapter per CPU core (jupyter-cache's local-parallel executor, in each chapter's folder as the
build does, with the build's timeout), so the build finds every chapter executed and executes
nothing again: each chapter still executes exactly once. A chapter that fails here is not cached;
the build then executes it and reports the failing cell, and `make nbcheck` fails on it.

    python _ext/preexecute.py _build/.jupyter_cache book/a.md book/b.md ...
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

# myst-nb reads MyST notebooks through this jupyter-cache reader plugin; the cache keys on the code
# cells and kernelspec that reader returns, so the build matches what is cached here.
READ_DATA = {"type": "plugin", "name": "myst_nb_md"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache", help="the execution cache folder (Jupyter Book: _build/.jupyter_cache)")
    parser.add_argument("chapters", nargs="+", help="MyST-notebook .md files")
    parser.add_argument("--timeout", type=int, default=None,
                        help="seconds per cell (default: execute.timeout in _config.yml, as the build)")
    args = parser.parse_args(argv)
    if args.timeout is None:
        import yaml  # comes with jupyter-book

        config = yaml.safe_load((Path(__file__).resolve().parents[1] / "_config.yml").read_text())
        args.timeout = int(config["execute"]["timeout"])

    from jupyter_cache import get_cache
    from jupyter_cache.executors import load_executor

    logging.basicConfig(level=logging.WARNING, format="preexecute: %(message)s")
    logger = logging.getLogger("preexecute")  # WARNING also quietens the worker pool's own log
    cache = get_cache(args.cache)
    pks = []
    # Longest first would be best; the learning chapter trains dozens of networks, so it goes first.
    chapters = sorted((Path(c).resolve() for c in args.chapters), key=lambda p: p.stem != "learning")
    for chapter in chapters:
        if not chapter.is_file():
            parser.error(f"no such chapter: {chapter}")
        pks.append(cache.add_nb_to_project(str(chapter), read_data=READ_DATA).pk)
    executor = load_executor("local-parallel", cache, logger=logger)
    result = executor.run_and_cache(filter_pks=pks, timeout=args.timeout, allow_errors=False)
    for uri in result.excepted + result.errored:
        logger.warning("%s failed; the book build will execute it again and report the error", uri)
    print(f"preexecute: {len(result.succeeded)} executed and cached, "
          f"{len(result.excepted) + len(result.errored)} failed, {len(pks)} chapters in all")
    return 0  # failures are reported by the build and by make nbcheck


if __name__ == "__main__":
    sys.exit(main())
