"""The equation ledger: which of the paper's equations the book displays, where each is checked, how,
and where the printed form is wrong. It is read from the book's MyST notebooks, never typed by hand.

Conventions in ``book/*.md``
----------------------------
* A displayed equation carries a MyST label ``eq-N``: ``$$ ... $$ (eq-N)``, or a ``{math}``
  directive with ``:label: eq-N``. An equation the book derives for the published version's
  l_{p,q} norm, whose own numbers are not available here, carries ``pq-N`` instead (shown as
  ``(pq.N)``); everything below holds for it too, and it must be checked.
* A code cell checks equation N when it has a comment ``# checks eq-N`` (several labels may be
  listed: ``# checks eq-10, eq-11``). The check is *symbolic* when the cell uses SymPy (``sp.`` or
  ``sympy``) and *numeric* when it compares numbers (``np.testing``, ``assert_allclose``, or an
  ``assert`` in a cell without SymPy); a cell can be both. A check cell must assert something.
* A discrepancy between the printed and the correct form is marked in the cell that shows it:
  ``# typo eq-N: what is printed, what is right and why``.
* A slip of the paper that is not a misprinted formula (a sentence that contradicts its equation,
  an equation applied where it does nothing, a wrong list of numbers) is marked the same way:
  ``# slip eq-N: note`` when it concerns equation N, or ``# slip where: note`` (``where`` a short
  name of the place in the paper, without a colon) for one outside the numbered equations.

The module is also a Sphinx extension (``sphinx: local_extensions: {ledger: _ext/}`` in
``_config.yml``; it lives beside the book, not in the package): it numbers every display
labelled ``eq-N`` as ``(N)``, the paper's number, in the display and in every ``{eq}`` reference,
instead of Sphinx's running count per page.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Display", "Check", "Typo", "Slip", "Ledger", "book_dir", "parse_page", "parse_book", "ledger_rows",
           "problems", "markdown_table", "slips_table", "REQUIRED", "PREFIXES", "number", "prefix", "shown_number",
           "setup"]

#: The equations the book must display and check (the issue's range, eqs. 10-37).
REQUIRED = range(10, 38)

#: The two kinds of label: the paper's equations and those derived here for the l_{p,q} norm.
PREFIXES = ("eq", "pq")
_LABEL = r"(?:eq|pq)-\d+"
_DOLLAR_LABEL = re.compile(rf"\$\$\s*\(({_LABEL})\)")
_MATH_LABEL = re.compile(rf"^\s*:label:\s*({_LABEL})\s*$")
_CHECKS = re.compile(rf"#\s*checks\s+({_LABEL}(?:\s*,\s*{_LABEL})*)", re.IGNORECASE)
_TYPO = re.compile(rf"#\s*(typo|slip)\s+({_LABEL})\s*:\s*(.+?)\s*$", re.IGNORECASE)
_SLIP = re.compile(rf"#\s*slip\s+(?!{_LABEL}\s*:)([^:]+?)\s*:\s*(.+?)\s*$", re.IGNORECASE)
_CODE_FENCE = re.compile(r"^(`{3,}|~{3,})\{code-cell\}")
_SYMBOLIC = re.compile(r"\bsp\.|\bsympy\b")
_NUMERIC = re.compile(r"np\.testing|assert_allclose|assert_array_equal|assert_array_less")
_ASSERTS = re.compile(r"\bassert\b|assert_allclose|assert_array_equal|assert_array_less")


@dataclass(frozen=True)
class Display:
    """Equation ``label`` displayed on ``page`` at ``line`` (1-based)."""
    label: str
    page: str
    line: int


@dataclass(frozen=True)
class Check:
    """A code cell on ``page`` (starting at ``line``) that checks ``label``."""
    label: str
    page: str
    line: int
    kinds: frozenset
    asserts: bool

    @property
    def how(self) -> str:
        return "both" if len(self.kinds) == 2 else next(iter(self.kinds))


@dataclass(frozen=True)
class Typo:
    """A ``# typo eq-N: note`` (``kind`` "typo") or ``# slip eq-N: note`` (``kind`` "slip") mark in
    the cell on ``page`` starting at ``line``."""
    label: str
    page: str
    line: int
    note: str
    kind: str = "typo"


@dataclass(frozen=True)
class Slip:
    """A ``# slip where: note`` mark, for a slip outside the numbered equations."""
    where: str
    page: str
    line: int
    note: str


@dataclass
class Ledger:
    displays: list
    checks: list
    typos: list
    slips: list = field(default_factory=list)


def number(label: str) -> int:
    """``"eq-12"`` -> ``12`` (and ``"pq-3"`` -> ``3``)."""
    return int(label.split("-", 1)[1])


def prefix(label: str) -> str:
    """``"eq-12"`` -> ``"eq"``, ``"pq-3"`` -> ``"pq"``."""
    return label.split("-", 1)[0]


def shown_number(label: str) -> str:
    """The number a reader sees: ``12`` for ``eq-12`` (the paper's), ``pq.3`` for ``pq-3``."""
    return str(number(label)) if prefix(label) == "eq" else f"{prefix(label)}.{number(label)}"


def book_dir() -> Path:
    """The book's chapter folder: ``book/`` beside this ``_ext/`` folder of the book's tools."""
    path = Path(__file__).resolve().parent.parent / "book"
    if not path.is_dir():
        raise FileNotFoundError(f"no book/ folder at {path}; pass the folder to parse_book()")
    return path


def _strip_comments(code: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in code.splitlines())


def _cells(text: str):
    """Yield ``(kind, first_line, text)`` for markdown stretches and code cells of a MyST notebook."""
    lines = text.splitlines()
    kind, start, buf, fence = "markdown", 1, [], None
    for n, line in enumerate(lines, start=1):
        if kind == "markdown":
            m = _CODE_FENCE.match(line)
            if m:
                yield kind, start, "\n".join(buf)
                kind, start, buf, fence = "code", n, [], m.group(1)
                continue
        elif line.strip() == fence:
            yield kind, start, "\n".join(buf)
            kind, start, buf, fence = "markdown", n + 1, [], None
            continue
        buf.append(line)
    if kind == "code":
        raise ValueError(f"unclosed code cell starting at line {start}")
    yield kind, start, "\n".join(buf)


def parse_page(path) -> Ledger:
    """Displays, checks and typo marks of one MyST notebook."""
    path = Path(path)
    page = path.stem
    displays, checks, typos, slips = [], [], [], []
    try:
        cells = list(_cells(path.read_text(encoding="utf-8")))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    for kind, start, text in cells:
        if kind == "markdown":
            for offset, line in enumerate(text.splitlines()):
                for label in _DOLLAR_LABEL.findall(line) + _MATH_LABEL.findall(line):
                    displays.append(Display(label, page, start + offset))
            continue
        code = _strip_comments(text)
        kinds = set()
        if _SYMBOLIC.search(code):
            kinds.add("symbolic")
        if _NUMERIC.search(code) or (not kinds and _ASSERTS.search(code)):
            kinds.add("numeric")
        asserts = bool(_ASSERTS.search(code))
        for line in text.splitlines():
            m = _CHECKS.search(line)
            if m:
                for label in re.findall(_LABEL, m.group(1)):
                    checks.append(Check(label, page, start, frozenset(kinds or {"numeric"}), asserts))
            m = _TYPO.search(line)
            if m:
                typos.append(Typo(m.group(2), page, start, m.group(3), m.group(1).lower()))
                continue
            m = _SLIP.search(line)
            if m:
                slips.append(Slip(m.group(1), page, start, m.group(2)))
    return Ledger(displays, checks, typos, slips)


def parse_book(folder=None) -> Ledger:
    """Parse every ``*.md`` notebook in ``folder`` (default :func:`book_dir`)."""
    folder = book_dir() if folder is None else Path(folder)
    ledger = Ledger([], [], [], [])
    for path in sorted(folder.glob("*.md")):
        part = parse_page(path)
        ledger.displays += part.displays
        ledger.checks += part.checks
        ledger.typos += part.typos
        ledger.slips += part.slips
    return ledger


def ledger_rows(ledger: Ledger | None = None, numbers=None, kind: str = "eq") -> list[dict]:
    """One row per equation with labels of ``kind`` (``"eq"``: the paper's; ``"pq"``: derived for
    the l_{p,q} norm) that is displayed, checked or listed in ``numbers``, in order.

    Each row: ``label``, ``number``, ``displayed`` (pages), ``checked`` (pages, in order of first
    check), ``checks`` (how many cells), ``how`` (``symbolic``/``numeric``/``both``/``""``),
    ``typos`` and ``slips`` (the notes of each kind of mark), ``asserts`` (every check cell asserts).
    """
    ledger = parse_book() if ledger is None else ledger
    labels = {d.label for d in ledger.displays} | {c.label for c in ledger.checks}
    labels |= {t.label for t in ledger.typos} | {f"{kind}-{n}" for n in (numbers or ())}
    labels = {label for label in labels if prefix(label) == kind}
    by_label = defaultdict(list)
    for c in ledger.checks:
        by_label[c.label].append(c)
    rows = []
    for label in sorted(labels, key=number):
        cs = by_label[label]
        kinds = set().union(*(c.kinds for c in cs)) if cs else set()
        rows.append({
            "label": label,
            "number": number(label),
            "displayed": sorted({d.page for d in ledger.displays if d.label == label}),
            "checked": list(dict.fromkeys(c.page for c in cs)),
            "checks": len(cs),
            "how": "both" if len(kinds) == 2 else (next(iter(kinds)) if kinds else ""),
            "typos": [t.note for t in ledger.typos if t.label == label and t.kind == "typo"],
            "slips": [t.note for t in ledger.typos if t.label == label and t.kind == "slip"],
            "asserts": all(c.asserts for c in cs),
        })
    return rows


def problems(ledger: Ledger | None = None, required=REQUIRED) -> list[str]:
    """What is wrong with the ledger: a required equation not displayed or not checked, a label
    displayed twice, a check or typo mark naming an equation that is not displayed, a check cell
    without an assertion, a derived (``pq-N``) equation displayed without a check. Empty when all
    is well."""
    ledger = parse_book() if ledger is None else ledger
    out = []
    shown = defaultdict(list)
    for d in ledger.displays:
        shown[d.label].append(f"{d.page}:{d.line}")
    for label, where in sorted(shown.items(), key=lambda kv: number(kv[0])):
        if len(where) > 1:
            out.append(f"{label} is displayed {len(where)} times ({', '.join(where)})")
    checked = {c.label for c in ledger.checks}
    for n in required:
        label = f"eq-{n}"
        if label not in shown:
            out.append(f"{label} is not displayed with a label")
        if label not in checked:
            out.append(f"{label} has no check cell (# checks {label})")
    for label in sorted(set(shown) - checked, key=number):
        if prefix(label) == "pq":
            out.append(f"{label} is derived and displayed but has no check cell (# checks {label})")
    for c in ledger.checks:
        if c.label not in shown:
            out.append(f"{c.page}:{c.line} checks {c.label}, which no page displays")
        if not c.asserts:
            out.append(f"{c.page}:{c.line} checks {c.label} but asserts nothing")
    for t in ledger.typos:
        if t.label not in shown:
            out.append(f"{t.page}:{t.line} marks a {t.kind} in {t.label}, which no page displays")
    return out


def markdown_table(rows: list[dict], link: bool = True) -> str:
    """The ledger as a MyST table; with ``link`` equations and pages are cross-references
    (``{eq}`` to the display, ``{doc}`` to the page, for a page in the same folder)."""
    def pages(names):
        if not names:
            return "—"
        return ", ".join(f"{{doc}}`{n} <{n}>`" if link else n for n in names)

    head = "| Eq. | Displayed in | Checked in | Checks | How | Printed form |\n|---|---|---|---|---|---|"
    lines = [head]
    for r in rows:
        eq = f"{{eq}}`{r['label']}`" if link and r["displayed"] else f"({shown_number(r['label'])})"
        printed = "; ".join([f"**typo**: {note}" for note in r["typos"]]
                            + [f"**slip**: {note}" for note in r.get("slips", [])])
        printed = printed or ("as printed" if prefix(r["label"]) == "eq" else "derived here")
        lines.append(f"| {eq} | {pages(r['displayed'])} | {pages(r['checked'])} "
                     f"| {r['checks']} | {r['how'] or '—'} | {printed.replace('|', chr(92) + '|')} |")
    return "\n".join(lines)


def slips_table(ledger: Ledger | None = None, link: bool = True) -> str:
    """The slips outside the numbered equations (``# slip where: note``) as a MyST table."""
    ledger = parse_book() if ledger is None else ledger
    lines = ["| Where in the paper | Marked in | Slip |", "|---|---|---|"]
    for s in ledger.slips:
        page = f"{{doc}}`{s.page} <{s.page}>`" if link else s.page
        lines.append(f"| {s.where} | {page} | {s.note.replace('|', chr(92) + '|')} |")
    return "\n".join(lines)


# -- Sphinx: the paper's equation numbers ------------------------------------------------------

_PAPER_NODE_ID = re.compile(r"equation-((?:eq|pq)-\d+)")


def _paper_numbers(app, env):
    """After Sphinx numbers the displays of each page (``env-get-updated``), give ``eq-N`` the
    number N and ``pq-N`` the number pq.N: in ``toc_fignumbers`` (used with ``numfig``, Jupyter
    Book's default) and in the math domain (used without it)."""
    for numbers in env.toc_fignumbers.values():
        shown = numbers.get("displaymath", {})
        for node_id in shown:
            m = _PAPER_NODE_ID.fullmatch(node_id)
            if m:
                label = m.group(1)
                shown[node_id] = (number(label),) if prefix(label) == "eq" else (prefix(label), number(label))
    equations = env.get_domain("math").data.get("objects", {})
    for label, (docname, _) in list(equations.items()):
        if re.fullmatch(_LABEL, label):
            equations[label] = (docname, number(label) if prefix(label) == "eq" else shown_number(label))
    return []


def setup(app):
    """Sphinx entry point: number ``eq-N`` displays as in the paper, ``pq-N`` as pq.N."""
    app.connect("env-get-updated", _paper_numbers, priority=900)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
