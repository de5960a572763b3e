"""gaugelit.experiments.provenance: every committed run file names code the table knows, and the labels say
which changes since bear on a run."""
import json
from pathlib import Path

from gaugelit.experiments import code_fingerprint
from gaugelit.experiments import provenance as pv

RESULTS = Path(__file__).resolve().parents[2] / "results" / "paper"      # the repository's results/


def test_the_table_is_a_chain():
    for a, b in zip(pv.CHANGES, pv.CHANGES[1:]):
        assert a.to == b.after


def test_every_committed_run_file_has_known_code():
    files = sorted(RESULTS.glob("*.json"))
    assert files, "results/paper/ holds the committed paper-scale runs"
    for path in files:
        p = pv.provenance(json.loads(path.read_text()))
        assert p["known"], f"{path.name}: code {p['code']} is neither current nor in provenance.CHANGES"


def test_labels_say_what_bears_on_a_run():
    first = pv.CHANGES[0].after
    last = pv.CHANGES[-1].to
    sgd = {"code": first, "settings": {"optimizer": "sgd", "architecture": "3-layer"}}
    egd = {"code": first, "settings": {"optimizer": "egd", "architecture": "3-layer"}}
    p = pv.provenance(sgd, current=last)
    assert p["known"] and p["complete"] and len(p["changes"]) == len(pv.CHANGES) and p["relevant"] == []
    assert "nothing changed since bears on this run" in pv.label(sgd, current=last)
    assert any("EG+-" in what for what in pv.provenance(egd, current=last)["relevant"])
    assert "bearing on this run" in pv.label(egd, current=last)
    assert pv.provenance({"code": last}, current=last)["current"]
    assert not pv.provenance({"code": "0" * 16}, current=last)["known"]
    assert "not in gaugelit.experiments.provenance.CHANGES" in pv.label({"code": "0" * 16}, current=last)
    # when the modules change again and the table has no entry yet, the label says so
    assert "later changes not in the table" in pv.label(sgd, current="f" * 16)


def test_the_table_reaches_this_checkout():
    # A change to the fingerprinted modules (experiments.code_fingerprint's list) needs
    # its entry in provenance.CHANGES, saying whether it bears on the committed runs.
    current = code_fingerprint()
    assert current == pv.CHANGES[-1].to, (
        f"this checkout's code fingerprint {current} is not in gaugelit.experiments.provenance.CHANGES: add a Change("
        f"{pv.CHANGES[-1].to!r}, {current!r}, what changed, which runs it affects)")
