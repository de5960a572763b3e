"""The package layout changed no public number: every value that tests/golden/layout.py records,
through the public API, equals what the code before the layout change gave (layout.npz, written at
commit 907eba5) to the rounding of the dtype it was computed in (float64 1e-12, float32 1e-5,
normwise), integers exactly."""
import subprocess
import sys
from pathlib import Path

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
sys.path.insert(0, str(GOLDEN_DIR))
import layout  # noqa: E402


def test_public_results_are_as_recorded_before_the_layout_change(tmp_path):
    # recorded in a fresh interpreter: the float32 EGD run with gauge fixing amplifies the rounding of
    # another BLAS summation order to 1e-4 in two epochs, and an earlier test's threadpoolctl limits,
    # though restored, left OpenBLAS summing as with one thread (seen in CI; the record was made with
    # the library's default threads, as CI runs)
    out = tmp_path / "now.npz"
    subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(GOLDEN_DIR)!r}); import layout; "
                    f"layout.save(layout.record(), {str(out)!r})"], check=True)
    problems = layout.compare(layout.load(out), layout.load())
    assert not problems, f"{len(problems)} values changed:\n" + "\n".join(problems[:40])


def _changed(new, old):
    return [p.split(":")[0] for p in layout.compare(new, old)]


def test_the_comparison_sees_a_float64_change_of_one_part_in_1e11_and_a_count_off_by_one():
    old = layout.load()
    key = next(k for k in old if k.endswith("/objective") and layout.computed_in(k) == "float64")
    new = dict(old)
    new[key] = old[key] * (1 + 1e-11)
    assert _changed(new, old) == [key]
    new[key] = old[key]
    count = next(k for k in old if k.endswith("/iterations"))
    new[count] = old[count] + 1
    assert _changed(new, old) == [count]


def test_float32_values_are_held_to_float32_rounding_normwise():
    old = layout.load()
    key = next(k for k in old if "/float32/" in k and k.endswith("/factors"))
    new = dict(old)
    new[key] = old[key] * (1 + 1e-6)                  # a few float32 rounding units: the same result
    assert _changed(new, old) == []
    new[key] = old[key] * (1 + 1e-4)                  # a different result
    assert _changed(new, old) == [key]
    bias = next(k for k in old if "/float32/" in k and k.endswith("/b2"))
    new = dict(old)
    new[bias] = old[bias].copy()
    new[bias][int(abs(old[bias]).argmin())] += 1e-7 * abs(old[bias]).max()   # an entry near zero
    assert _changed(new, old) == []
