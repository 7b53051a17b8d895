"""Paper-to-code maps, generated from the docstrings of a method module so they cannot drift.

Every public function, class and public method of a method module (and of shared modules such as
``nbhelpers.data.anomalies``, where the docstring names the paper) that cites the paper in its
docstring — ``Eq. 5``, ``Eq. 6-7`` (a range), ``Fig. 4a``, ``Table V``, ``Tables 4-5``, ``§3.2``,
``Sec. III-B``, ``supp. §1.1`` — becomes one :class:`MapEntry` per cited item, with the docstring
sentence that cites it and the file and line of its ``def`` / ``class``. A notebook shows the
table with::

    display(Markdown(papermap.markdown_table("fod")))

The links are relative to ``notebooks/`` (``../nbhelpers/methods/fod.py#L123``). :func:`verify`
re-resolves every entry (module import, qualified name, ``def`` line) so a renamed or moved function
is caught by the tests.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from nbhelpers.methods.base import Paper


def papers() -> dict[str, tuple[Paper, str]]:
    """Paper key -> ``(Paper, module)`` for every registered method class that declares ``paper``
    (the key is the method's registry name; a subclass that inherits its parent's paper, such as
    ``pouta_vanilla``, is not a paper of its own). The module is the method's package under
    ``nbhelpers.methods`` (``nbhelpers.methods.thfr``), or the class's own module for a method defined
    elsewhere. Nothing else lists the papers."""
    from nbhelpers.methods.base import _REGISTRY, available

    available()
    out = {}
    for name, cls in sorted(_REGISTRY.items()):
        if "paper" in vars(cls) and cls.paper is not None:
            home = cls.__module__
            out[name] = (cls.paper, ".".join(home.split(".")[:3]) if home.startswith("nbhelpers.methods.") else home)
    return out


def _modules(module: str) -> list[str]:
    """``module`` and, for a package, every module inside it."""
    mod = importlib.import_module(module)
    if not hasattr(mod, "__path__"):
        return [module]
    return [module, *(info.name for info in pkgutil.walk_packages(mod.__path__, f"{module}."))]


#: The repository root (``nbhelpers/..``): paths of entries are relative to it.
ROOT = Path(__file__).resolve().parents[1]

_NUMBER = r"\d+[a-z]?|[IVX]+\b"
_SECTION = r"(?:\d+|[IVX]+)(?:[.-](?:\d+|[A-Z])\b)*"
_REFERENCE = re.compile(
    r"(?P<supp>\bsupp(?:lementary)?\.?\s+)?"
    rf"(?:(?P<eq>\bEqs?\.)\s*(?P<eq_n>\d+)(?:\s*[-–]\s*(?P<eq_m>\d+))?"
    rf"|(?P<fig>\bFig(?:ure)?s?\.?)\s*(?P<fig_n>{_NUMBER})(?:\s*[-–]\s*(?P<fig_m>\d+))?"
    rf"|(?P<tab>\bTables?)\s+(?P<tab_n>{_NUMBER})(?:\s*[-–]\s*(?P<tab_m>\d+))?"
    rf"|(?:§\s*|\bSec\.\s*)(?P<sec_n>{_SECTION}))"
)
_KIND_ORDER = {"Eq.": 0, "Fig.": 1, "Table": 2, "§": 3}
_SENTENCE_END = re.compile(r"(?<!Eq)(?<!Fig)(?<!Sec)(?<!supp)(?<!e\.g)(?<!i\.e)(?<!vs)\.(?:\s|$)")
_ROMAN = {"I": 1, "V": 5, "X": 10}
_SPHINX_ROLE = re.compile(r":(?:func|class|meth|attr|data|mod|obj):`~?")
_SECTION_HEADER = re.compile(r"\s*(?:Args|Attributes|Returns|Raises|Yields|Notes?|Examples?):\s*$")


@dataclass(frozen=True)
class MapEntry:
    """One cited paper item and the code object whose docstring cites it.

    Attributes:
        reference: normalised citation, e.g. ``"Eq. 5"``, ``"Fig. 4a"``, ``"Table V"``, ``"§3.2"``,
            ``"supp. §1.1"``.
        module: dotted module name. qualname: ``"image_nns"`` or ``"THFR.predict"``.
        summary: the docstring's first sentence that cites :attr:`reference`.
        path: source file relative to the repository root (POSIX). line: 1-based line of the ``def``/``class``.
    """

    reference: str
    module: str
    qualname: str
    summary: str
    path: str
    line: int

    @property
    def name(self) -> str:
        """Last component of :attr:`qualname` (the name after ``def`` / ``class``)."""
        return self.qualname.rsplit(".", 1)[-1]


def references(doc: str | None) -> list[str]:
    """Normalised paper references cited in ``doc``, ranges expanded, in order of appearance, unique.

    ``"Eq. 4-5"`` -> ``["Eq. 4", "Eq. 5"]``; ``"Sec. 3.1"`` and ``"§3.1"`` -> ``"§3.1"``;
    ``"supp. §3.2"`` keeps its prefix (the supplementary material numbers its own sections).
    """
    found: list[str] = []
    for m in _REFERENCE.finditer(doc or ""):
        prefix = "supp. " if m["supp"] else ""
        if m["sec_n"]:
            items = [f"§{m['sec_n']}"]
        else:
            group, kind = next((g, k) for g, k in (("eq", "Eq."), ("fig", "Fig."), ("tab", "Table")) if m[g])
            first, last = m[f"{group}_n"], m[f"{group}_m"]
            numbers = [str(i) for i in range(int(first), int(last) + 1)] if last and first.isdigit() else [first]
            items = [f"{kind} {n}" for n in numbers]
        found += [prefix + item for item in items if prefix + item not in found]
    return found


def _sentences(doc: str) -> list[str]:
    """The sentences of ``doc``, paragraph by paragraph, each on one line (Sphinx roles and section
    headers such as ``Attributes:`` dropped)."""
    out = []
    for paragraph in _SPHINX_ROLE.sub("`", inspect.cleandoc(doc)).split("\n\n"):
        text = " ".join(line for line in paragraph.split("\n") if not _SECTION_HEADER.match(line))
        text = " ".join(text.split())
        while text:
            end = _SENTENCE_END.search(text)
            cut = end.start() + 1 if end else len(text)
            out.append(text[:cut].strip())
            text = text[cut:].strip()
    return out


def _summary(doc: str, reference: str) -> str:
    """The first sentence of ``doc`` that cites ``reference`` (``|`` escaped, at most 240 characters)."""
    sentences = _sentences(doc)
    sentence = next((s for s in sentences if reference in references(s)), sentences[0])
    if len(sentence) > 240:
        sentence = sentence[:239]
        if sentence.count("``") % 2:  # do not leave a code span open
            sentence = sentence[: sentence.rindex("``")]
        sentence = sentence.rstrip() + " …"
    return sentence.replace("|", "\\|")


def _public_objects(module: ModuleType) -> Iterator[tuple[str, Any]]:
    """``(qualname, object)`` of the module's public functions and classes (``__all__`` when defined)
    and of the public methods defined in those classes."""
    names = getattr(module, "__all__", [n for n in vars(module) if not n.startswith("_")])
    for name in names:
        obj = getattr(module, name)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)) or obj.__module__ != module.__name__:
            continue
        yield name, obj
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                func = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
                if not attr.startswith("_") and inspect.isfunction(func):
                    yield f"{name}.{attr}", func


def _definition(obj: Any) -> tuple[str, int]:
    """``(path relative to the repository root, line of the def/class keyword)`` of ``obj``."""
    target = inspect.unwrap(obj)
    lines, start = inspect.getsourcelines(target)
    offset = next(i for i, text in enumerate(lines) if re.match(r"\s*(async\s+def|def|class)\s", text))
    return Path(inspect.getsourcefile(target)).resolve().relative_to(ROOT).as_posix(), start + offset


def _sort_key(entry: MapEntry) -> tuple:
    """Main paper before supplement; equations, figures, tables, sections; numbers in natural order
    (``Eq. 2`` < ``Eq. 10``, ``Fig. 4`` < ``Fig. 4a``, ``Table V`` < ``Table VI``); then source line."""
    supp, ref = entry.reference.startswith("supp. "), entry.reference.removeprefix("supp. ")
    kind = "§" if ref.startswith("§") else ref.split(" ", 1)[0]
    number = ref[1:] if kind == "§" else ref.split(" ", 1)[1]
    parts = tuple((0, int(p), "") if p.isdigit() else (1, _roman(p), p) for p in re.findall(r"\d+|[A-Za-z]+", number))
    return supp, _KIND_ORDER[kind], parts, entry.line


def _roman(text: str) -> int:
    """Value of a Roman numeral (``"VI"`` -> 6); 0 for anything else (e.g. a figure's letter)."""
    if not text or set(text) - set(_ROMAN):
        return 0
    values = [_ROMAN[c] for c in text]
    return sum(-v if i + 1 < len(values) and v < values[i + 1] else v for i, v in enumerate(values))


def paper_map(paper: str, refs: Iterable[str] | None = None) -> list[MapEntry]:
    """Every citation in the docstrings of ``paper``'s code, sorted by reference (equations, figures,
    tables, sections, then the supplementary material) and then by source line.

    Args:
        paper: a key of :func:`papers` (``"thfr"``, ``"pouta"``, ``"prn"``, ``"fod"``).
        refs: keep only these references (e.g. ``["Eq. 1", "§3.2"]``); ``None`` keeps all.

    Raises:
        KeyError: unknown paper.
    """
    known = papers()
    if paper not in known:
        raise KeyError(f"unknown paper {paper!r}; known: {sorted(known)}.")
    spec, home = known[paper]
    own = _modules(home)
    wanted = None if refs is None else set(refs)
    tagged = re.compile(rf"\b{re.escape(spec.tag)}\b")
    entries = []
    for name in (*own, *(m for shared in spec.shared for m in _modules(shared))):
        module = importlib.import_module(name)
        for qualname, obj in _public_objects(module):
            doc = inspect.getdoc(obj) or ""
            if name not in own and not tagged.search(doc):
                continue
            cited = [r for r in references(doc) if wanted is None or r in wanted]
            if cited:
                path, line = _definition(obj)
                entries += [MapEntry(r, name, qualname, _summary(doc, r), path, line) for r in cited]
    return sorted(entries, key=_sort_key)


def to_markdown(entries: Iterable[MapEntry], link_prefix: str = "../") -> str:
    """A Markdown table ``paper | code | what it does`` with links ``{link_prefix}{path}#L{line}``
    (the default prefix suits notebooks in ``notebooks/``)."""
    rows = ["| paper | code | what it does |", "|---|---|---|"]
    rows += [f"| {e.reference} | [`{e.qualname}`]({link_prefix}{e.path}#L{e.line}) | {e.summary} |" for e in entries]
    return "\n".join(rows)


def markdown_table(paper: str, refs: Iterable[str] | None = None, link_prefix: str = "../") -> str:
    """:func:`to_markdown` of :func:`paper_map`, headed by the paper's title."""
    spec, home = papers()[paper]
    modules = ", ".join(f"`{m}`" for m in (home, *spec.shared))
    return f"**{spec.title}** → {modules}\n\n" + to_markdown(paper_map(paper, refs), link_prefix)


def verify(entries: Iterable[MapEntry]) -> list[str]:
    """Problems of entries that no longer resolve: the module does not import, the qualified name is
    gone, or the recorded line is not its ``def`` / ``class`` line. An empty list means all resolve."""
    problems = []
    for e in entries:
        where = f"{e.reference} -> {e.module}.{e.qualname} ({e.path}:{e.line})"
        try:
            obj: Any = importlib.import_module(e.module)
            for part in e.qualname.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            problems.append(f"{where}: does not resolve ({exc})")
            continue
        source = ROOT / e.path
        lines = source.read_text(encoding="utf-8").splitlines() if source.is_file() else []
        text = lines[e.line - 1] if 0 < e.line <= len(lines) else ""
        if not re.match(rf"\s*(async\s+def|def|class)\s+{re.escape(e.name)}\b", text):
            problems.append(f"{where}: line {e.line} is not the definition of {e.name!r} (found {text.strip()!r})")
    return problems


__all__ = ["MapEntry", "Paper", "papers", "markdown_table", "paper_map", "references", "to_markdown", "verify"]
