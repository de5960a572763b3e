"""The equation ledger: the book displays and checks every equation from (10) to (37), and the parser
reads the conventions of book/*.md correctly."""
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_ext"))
import ledger  # noqa: E402 -- the book's tool, beside the book


def test_book_displays_and_checks_every_required_equation():
    book = ledger.parse_book()
    issues = ledger.problems(book)
    assert not issues, "\n".join(issues)
    rows = {r["number"]: r for r in ledger.ledger_rows(book, numbers=ledger.REQUIRED)}
    for n in ledger.REQUIRED:
        assert rows[n]["displayed"], f"eq-{n} is not displayed"
        assert rows[n]["checks"] >= 1, f"eq-{n} has no check"
        assert rows[n]["asserts"], f"a check of eq-{n} asserts nothing"


def test_known_misprints_are_marked():
    # The cut eq. (12), the missing |.| of eq. (20), W_ij for W_ji in eqs. (27) and (37), the
    # missing power 1/p of eqs. (17)-(19): each must be shown and marked in the book.
    marked = {r["number"] for r in ledger.ledger_rows() if r["typos"]}
    assert {12, 17, 18, 19, 20, 27, 37} <= marked


PAGE = textwrap.dedent('''\
    ---
    jupytext:
      text_representation:
        format_name: myst
    ---
    # A page

    $$
    F = 1
    $$ (eq-10)

    Text citing {eq}`eq-11` is not a display.

    ```{math}
    :label: eq-11
    G = 2
    ```

    ```{code-cell} ipython3
    # checks eq-10, eq-11
    # typo eq-11: printed with a wrong sign
    assert sp.simplify(lhs - rhs) == 0
    ```

    ```{code-cell} ipython3
    :tags: [hide-input]

    # checks eq-10
    np.testing.assert_allclose(a, b)
    x = "$$ (eq-99)"      # a label inside code is not a display
    ```

    ```{code-cell} ipython3
    # checks eq-11
    expr = sp.lambdify(x, y)
    np.testing.assert_allclose(expr(1), 2)
    ```

    ```{code-cell} ipython3
    # checks eq-12
    y = 2    # a check of an equation that is not displayed, asserting nothing
    ```
    ''')


@pytest.fixture
def page(tmp_path):
    path = tmp_path / "page.md"
    path.write_text(PAGE)
    return path


def test_parser_reads_labels_checks_kinds_and_typos(page):
    parsed = ledger.parse_page(page)
    assert [(d.label, d.line) for d in parsed.displays] == [("eq-10", 10), ("eq-11", 15)]
    kinds = [(c.label, c.how, c.asserts) for c in parsed.checks]
    assert kinds == [("eq-10", "symbolic", True), ("eq-11", "symbolic", True), ("eq-10", "numeric", True),
                     ("eq-11", "both", True), ("eq-12", "numeric", False)]
    assert [(t.label, t.note) for t in parsed.typos] == [("eq-11", "printed with a wrong sign")]


def test_rows_and_problems(page):
    parsed = ledger.parse_page(page)
    rows = {r["label"]: r for r in ledger.ledger_rows(parsed, numbers=[13])}
    assert list(rows) == ["eq-10", "eq-11", "eq-12", "eq-13"]
    assert rows["eq-10"]["how"] == "both" and rows["eq-10"]["checks"] == 2
    assert rows["eq-11"]["typos"] == ["printed with a wrong sign"] and rows["eq-11"]["how"] == "both"
    assert rows["eq-13"]["checks"] == 0 and rows["eq-13"]["how"] == ""
    issues = ledger.problems(parsed, required=[10, 11, 13])
    assert any("eq-13 is not displayed" in s for s in issues)
    assert any("eq-13 has no check" in s for s in issues)
    assert any("checks eq-12, which no page displays" in s for s in issues)
    assert any("checks eq-12 but asserts nothing" in s for s in issues)
    assert not any("eq-10" in s or "eq-11" in s for s in issues)


def test_a_missing_check_fails(tmp_path, page):
    (tmp_path / "other.md").write_text("$$ x $$ (eq-10)\n")
    issues = ledger.problems(ledger.parse_book(tmp_path), required=[10, 11])
    assert any("eq-10 is displayed 2 times" in s for s in issues)


def test_table_escapes_pipes_and_links(page):
    rows = ledger.ledger_rows(ledger.parse_page(page))
    rows[1]["typos"] = ["|W| is wrong"]
    table = ledger.markdown_table(rows)
    assert "{eq}`eq-10`" in table and "{doc}`page <page>`" in table and "\\|W\\|" in table
    assert "(12)" in table                                      # not displayed: no cross-reference


def test_unclosed_code_cell_is_an_error(tmp_path):
    bad = tmp_path / "bad.md"
    bad.write_text("```{code-cell} ipython3\n# checks eq-10\n")
    with pytest.raises(ValueError, match="unclosed code cell"):
        ledger.parse_page(bad)


def test_slip_marks_on_equations_and_elsewhere(tmp_path):
    page = tmp_path / "slips.md"
    page.write_text(textwrap.dedent('''\
        $$ b = 1 $$ (eq-41)

        ```{code-cell} ipython3
        # slip eq-41: a zero bias never moves
        # slip section 4.1 (the 7-layer network): one width dropped
        # typo eq-41: a sign
        assert True
        ```
        '''))
    parsed = ledger.parse_page(page)
    assert [(t.label, t.kind, t.note) for t in parsed.typos] == [
        ("eq-41", "slip", "a zero bias never moves"), ("eq-41", "typo", "a sign")]
    assert [(s.where, s.note) for s in parsed.slips] == [("section 4.1 (the 7-layer network)", "one width dropped")]
    row = ledger.ledger_rows(parsed)[0]
    assert row["typos"] == ["a sign"] and row["slips"] == ["a zero bias never moves"]
    assert "**slip**: a zero bias never moves" in ledger.markdown_table([row])
    table = ledger.slips_table(parsed)
    assert "| section 4.1 (the 7-layer network) | {doc}`slips <slips>` | one width dropped |" in table
    (tmp_path / "orphan.md").write_text("```{code-cell} ipython3\n# slip eq-99: nowhere\nassert True\n```\n")
    assert any("marks a slip in eq-99, which no page displays" in s
               for s in ledger.problems(ledger.parse_book(tmp_path), required=[]))


def test_the_papers_slips_are_marked():
    # Issue 11: the 7-layer list of the extraction, eqs. (35) and (41) applied to zero-initialised
    # biases, and the path's weights written with reversed indices before eq. (18).
    book = ledger.parse_book()
    rows = {r["number"]: r for r in ledger.ledger_rows(book)}
    assert rows[35]["slips"] and rows[41]["slips"] and rows[18]["slips"]
    assert any("7-layer" in s.where for s in book.slips)


def test_derived_lpq_labels_are_their_own_table_and_must_be_checked(tmp_path):
    page = tmp_path / "lpq.md"
    page.write_text(textwrap.dedent('''\
        $$ F = 1 $$ (eq-10)

        $$ G = 2 $$ (pq-10)

        $$ H = 3 $$ (pq-2)

        ```{code-cell} ipython3
        # checks eq-10, pq-10
        assert 1 == 1
        ```
        '''))
    parsed = ledger.parse_page(page)
    assert [d.label for d in parsed.displays] == ["eq-10", "pq-10", "pq-2"]
    assert [r["label"] for r in ledger.ledger_rows(parsed)] == ["eq-10"]          # the paper's only
    rows = ledger.ledger_rows(parsed, kind="pq")
    assert [(r["label"], r["checks"]) for r in rows] == [("pq-2", 0), ("pq-10", 1)]
    issues = ledger.problems(parsed, required=[])
    assert issues == ["pq-2 is derived and displayed but has no check cell (# checks pq-2)"]
    table = ledger.markdown_table(rows, link=False)
    assert "(pq.2)" in table and "derived here" in table and ledger.shown_number("eq-10") == "10"


def test_the_book_checks_every_derived_lpq_equation():
    book = ledger.parse_book()
    rows = ledger.ledger_rows(book, kind="pq")
    assert len(rows) >= 10 and all(r["checks"] and r["asserts"] and r["displayed"] for r in rows)
