"""The package layout changed no public number: every value that tests/golden/layout.py records,
through the public API, equals what the code before the layout change gave (layout.npz, written at
commit 907eba5) to 1e-12 relative, integers exactly."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "golden"))
import layout  # noqa: E402


def test_public_results_are_as_recorded_before_the_layout_change():
    problems = layout.compare(layout.record(), layout.load())
    assert not problems, f"{len(problems)} values changed:\n" + "\n".join(problems[:40])


def test_the_comparison_sees_a_change_of_one_part_in_1e11():
    old = layout.load()
    key = next(k for k in old if k.endswith("/objective"))
    new = dict(old)
    new[key] = old[key] * (1 + 1e-11)
    assert [p.split(":")[0] for p in layout.compare(new, old)] == [key]
    new[key] = old[key]
    count = next(k for k in old if k.endswith("/iterations"))
    new[count] = old[count] + 1
    assert [p.split(":")[0] for p in layout.compare(new, old)] == [count]
