"""bench/RESULTS.md's grid-throughput table is what bench/grid_throughput.py computes from the run
files it names (bench/results/grid-throughput.json), and those files are committed."""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import grid_throughput as gt  # noqa: E402


def test_the_table_is_recomputed_from_the_run_files_it_names():
    stored = json.loads((ROOT / "bench" / "results" / "grid-throughput.json").read_text())
    records = gt.read_runs(ROOT / "results" / "paper", stored["run_ids"])
    assert len(records) == len(stored["run_ids"])                  # every file named exists and is finished
    rows = gt.table(records)
    assert rows == stored["rows"]
    assert gt.markdown(rows) in (ROOT / "bench" / "RESULTS.md").read_text()


def test_steps_count_the_epochs_and_the_batches():
    settings = {"dataset": "mnist", "n_train": None, "epochs": 30, "batch_size": 32}
    assert gt.steps(settings) == 30 * 1875
    assert gt.steps({**settings, "n_train": 2000, "epochs": 3}) == 189
