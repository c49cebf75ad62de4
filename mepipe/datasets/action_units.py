"""FACS action-unit strings, as CASME II and SAMM code them, parsed into one normalized record.

The sheets write the action units (AUs) of a clip as a short string such as ``4+7``, ``R10``,
``15A+17``, ``(R6 or R12)+R15`` or ``ref(7B)+43``. :func:`parse_action_units` reads every form
that occurs in the CASME II and SAMM sheets and returns an :class:`ActionUnitSet`.

Grammar (whitespace is allowed around every token; ``ref`` and ``or`` in any case)::

    cell        := empty | '?' | term ( '+' term )*
    term        := '?' | reference | alternative | descriptor | unit
    reference   := 'ref' '(' unit ')'                     -- "refer to": the unit is not certain
    alternative := '(' unit ( 'or' unit )+ ')'            -- one of them, the coder did not decide
                 | unit ( 'or' unit )+                    -- same, without the brackets
    descriptor  := 'soft focus'                           -- a free-text note some SAMM cells carry
    unit        := [ asymmetry ] [ side ] number [ intensity ] [ '?' ]
    asymmetry   := 'A/' | 'A'                             -- SAMM: asymmetric; never an intensity
    side        := 'L' | 'R'                              -- left / right
                 | 'T' | 'B'                              -- FACS top / bottom (lip), e.g. T18, B18
    number      := 1..99
    intensity   := 'A'..'E' [ '/' 'A'..'E' ]              -- a range 'A/B' keeps its first letter

``+`` binds loosest: ``L12 or L14+25`` is the alternative (L12 or L14) plus a certain AU25.

What each form becomes:

- a plain unit is certain and goes into ``units``;
- ``ref(...)``, and a unit followed by ``?``, go into ``units`` with ``uncertain=True``;
- the units of an ``or`` group go, as one tuple, into ``alternatives`` and never into ``units``;
- a lone ``?``, an ``or`` group, a ``ref(...)``, a ``?`` after a unit and an intensity range all
  mark the whole set ``uncertain``;
- a number from a spreadsheet cell (``12`` or ``12.0``) is AU12; empty, ``None`` or NaN is the
  empty set.

Anything else raises :class:`~mepipe.datasets.errors.DatasetError` quoting the text.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from mepipe.datasets.errors import DatasetError

#: Free-text notes that occur among the AU terms of the SAMM sheet. They describe the clip but are
#: not action units; anything not listed here is an error rather than silently accepted.
KNOWN_DESCRIPTORS = ("soft focus",)

_UNIT_PATTERN = re.compile(
    r"""
    (?P<asymmetric>A/?(?=[LRTB]?\d))?    # a leading A (or A/) only when a side or digit follows
    (?P<side>[LRTB])?
    (?P<number>\d{1,2})
    (?P<intensity>[A-E])?
    (?:/(?P<intensity_upper>[A-E]))?
    (?P<question>\?)?
    """,
    re.VERBOSE,
)
_REFERENCE_PATTERN = re.compile(r"ref\s*\(\s*(?P<inner>[^()]*?)\s*\)", re.IGNORECASE)
_OR_SEPARATOR = re.compile(r"\s+or\s+", re.IGNORECASE)
_EXAMPLES = "e.g. 12, 4+7, L12, R10B, A/L12, 10A/B, ref(7B), (R6 or R12)+R15, ?"


@dataclass(frozen=True, slots=True)
class ActionUnit:
    """One coded FACS action unit.

    Attributes
    ----------
    number : the FACS AU number (1..99), e.g. 12 for lip-corner puller.
    side : ``'L'`` or ``'R'`` for a left/right unilateral unit, ``'T'`` or ``'B'`` for FACS's
        top/bottom (lip) prefix, ``None`` for bilateral or unspecified.
    intensity : FACS intensity ``'A'`` (trace) .. ``'E'`` (maximum) when coded, else ``None``.
    uncertain : True when the coder marked the unit as not certain (``ref(...)``, a trailing
        ``?``, or a member of an ``or`` alternative).
    asymmetric : True for SAMM's ``A`` / ``A/`` prefix (asymmetric, possibly with a side).
    """

    number: int
    side: str | None = None
    intensity: str | None = None
    uncertain: bool = False
    asymmetric: bool = False

    def __str__(self) -> str:
        """The unit as a sheet writes it, e.g. ``L12``, ``15A``, ``A/L12``, ``A12B``."""
        if self.asymmetric:
            prefix = "A/" if self.side else "A"
        else:
            prefix = ""
        return f"{prefix}{self.side or ''}{self.number}{self.intensity or ''}"

    def _sort_key(self) -> tuple:
        return (self.number, self.side or "", self.intensity or "", self.asymmetric, self.uncertain)


@dataclass(frozen=True, slots=True)
class ActionUnitSet:
    """The action units of one clip, parsed from one sheet cell.

    Attributes
    ----------
    units : the certain units and the ``ref(...)``/``?`` units (those carry ``uncertain=True``),
        sorted by number then side, without duplicates.
    uncertain : True when anything in the cell was not certain: a ``?``, an ``or`` alternative,
        a ``ref(...)`` or an intensity range such as ``10A/B``.
    alternatives : the ``X or Y`` groups, each kept whole in the order written, never resolved.
    raw : the cell text as given (a number from a spreadsheet as its integer text).
    descriptors : free-text notes found among the terms (see :data:`KNOWN_DESCRIPTORS`).
    """

    units: tuple[ActionUnit, ...]
    uncertain: bool
    alternatives: tuple[tuple[ActionUnit, ...], ...]
    raw: str
    descriptors: tuple[str, ...] = ()

    @property
    def numbers(self) -> tuple[int, ...]:
        """Sorted unique AU numbers of the certain units (no ``ref``, ``?`` or ``or`` units)."""
        return tuple(sorted({unit.number for unit in self.units if not unit.uncertain}))

    def __str__(self) -> str:
        """Canonical form of the certain units, '+'-joined in sorted order, e.g. ``4+L10+R12``."""
        return "+".join(str(unit) for unit in self.units if not unit.uncertain)


def parse_action_units(text: str | int | float | None, *, where: str | None = None) -> ActionUnitSet:
    """Parse one action-unit cell of a CASME II or SAMM sheet.

    Parameters
    ----------
    text : the cell as read: a string, or an int/float when the spreadsheet stored a number.
    where : optional location (file, row, column) put in front of an error message, so a sheet
        reader can report where the bad cell is.

    Returns
    -------
    ActionUnitSet ; the empty set for ``None``, NaN or blank text.

    Raises
    ------
    DatasetError : the text does not follow the grammar in the module docstring.
    """
    raw = _cell_text(text, where)
    stripped = raw.strip()
    if not stripped:
        return ActionUnitSet(units=(), uncertain=False, alternatives=(), raw=raw)

    units: list[ActionUnit] = []
    alternatives: list[tuple[ActionUnit, ...]] = []
    descriptors: list[str] = []
    uncertain = False

    for term in _split_terms(stripped, raw, where):
        if term == "?":
            uncertain = True
            continue
        if term.casefold() in KNOWN_DESCRIPTORS:
            descriptors.append(term.casefold())
            continue
        reference = _REFERENCE_PATTERN.fullmatch(term)
        if reference:
            unit, _ = _parse_unit(reference.group("inner"), raw, where, uncertain=True)
            units.append(unit)
            uncertain = True
            continue
        if _OR_SEPARATOR.search(term):
            alternatives.append(_parse_alternative(term, raw, where))
            uncertain = True
            continue
        unit, unit_is_doubtful = _parse_unit(term, raw, where, uncertain=False)
        units.append(unit)
        uncertain = uncertain or unit_is_doubtful

    unique_units = tuple(sorted(set(units), key=ActionUnit._sort_key))
    return ActionUnitSet(
        units=unique_units,
        uncertain=uncertain,
        alternatives=tuple(alternatives),
        raw=raw,
        descriptors=tuple(descriptors),
    )


def _cell_text(text: str | int | float | None, where: str | None) -> str:
    if text is None:
        return ""
    if isinstance(text, bool):
        raise DatasetError(_message(where, repr(text), "a boolean is not an action-unit code"))
    if isinstance(text, int):
        return str(text)
    if isinstance(text, float):
        if math.isnan(text):
            return ""
        if not text.is_integer():
            raise DatasetError(_message(where, repr(text), "a fractional number is not an AU number"))
        return str(int(text))
    if isinstance(text, str):
        return text
    raise DatasetError(_message(where, repr(text), f"expected text or a number, got {type(text).__name__}"))


def _split_terms(text: str, raw: str, where: str | None) -> list[str]:
    """Split on '+' outside brackets; brackets only group, so nesting is an error."""
    terms: list[str] = []
    depth = 0
    current: list[str] = []
    for character in text:
        if character == "(":
            depth += 1
            if depth > 1:
                raise DatasetError(_message(where, raw, "nested brackets"))
        elif character == ")":
            depth -= 1
            if depth < 0:
                raise DatasetError(_message(where, raw, "')' without a matching '('"))
        if character == "+" and depth == 0:
            terms.append("".join(current).strip())
            current = []
        else:
            current.append(character)
    if depth != 0:
        raise DatasetError(_message(where, raw, "'(' without a matching ')'"))
    terms.append("".join(current).strip())
    if any(not term for term in terms):
        raise DatasetError(_message(where, raw, "an empty term between '+' signs"))
    return terms


def _parse_alternative(term: str, raw: str, where: str | None) -> tuple[ActionUnit, ...]:
    inner = term
    if inner.startswith("(") and inner.endswith(")"):
        inner = inner[1:-1].strip()
    if "(" in inner or ")" in inner:
        raise DatasetError(_message(where, raw, f"cannot read the 'or' group {term!r}"))
    choices = _OR_SEPARATOR.split(inner)
    return tuple(_parse_unit(choice, raw, where, uncertain=True)[0] for choice in choices)


def _parse_unit(term: str, raw: str, where: str | None, *, uncertain: bool) -> tuple[ActionUnit, bool]:
    """Parse one unit; the flag says whether the unit text itself carried doubt (range or '?')."""
    match = _UNIT_PATTERN.fullmatch(term.strip().upper())
    if match is None:
        raise DatasetError(_message(where, raw, f"{term.strip()!r} is not an action unit ({_EXAMPLES})"))
    number = int(match.group("number"))
    if number == 0:
        raise DatasetError(_message(where, raw, f"{term.strip()!r}: AU numbers start at 1"))
    has_range = match.group("intensity_upper") is not None
    if has_range and match.group("intensity") is None:
        problem = f"{term.strip()!r}: an intensity range needs two letters, e.g. 10A/B"
        raise DatasetError(_message(where, raw, problem))
    has_question = match.group("question") is not None
    unit = ActionUnit(
        number=number,
        side=match.group("side"),
        intensity=match.group("intensity"),
        uncertain=uncertain or has_question,
        asymmetric=match.group("asymmetric") is not None,
    )
    return unit, has_range or has_question


def _message(where: str | None, text: str, problem: str) -> str:
    location = f"{where}: " if where else ""
    return f"{location}cannot read action units {text!r}: {problem}"
