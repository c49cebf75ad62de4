"""Annotation sheets written the way CASME II and SAMM ship them, byte for byte reproducible.

Two writers, one per dataset:

- :func:`write_casme2_sheet` -> a ``CASME2-coding-*.xlsx``-style sheet: header on row 1, columns
  ``Subject`` (an integer: folder ``sub01`` is written 1), ``Filename``, ``OnsetFrame``,
  ``ApexFrame``, ``OffsetFrame``, one unnamed blank column, ``Action Units``,
  ``Estimated Emotion``.
- :func:`write_samm_sheet` -> a ``SAMM_Micro_FACS_Codes_v2.xlsx``-style sheet: a title block on
  rows 1-12, the header on row 13 (``Subject`` as an integer: folder ``006`` is written 6,
  ``Filename``, ``Inducement Code``, ``Onset Frame``, ``Apex Frame``, ``Offset Frame``,
  ``Duration``, ``Type``, ``Action Units``, ``Notes``, ``Estimated Emotion``,
  ``Objective Classes``), data from row 14.

Numbers are stored as numbers, as in the real sheets: frame numbers, codes, and an action-unit
cell that is all digits (``12``); any other action-unit string (``4+7``, ``R10``) is text. A
missing value is an empty cell. The same rows always give the same bytes: openpyxl's time stamps
(document properties and zip entries) are replaced by a fixed date.
"""

from __future__ import annotations

import datetime
import io
import os
import re
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import openpyxl

from mepipe.datasets.errors import DatasetError

# None: the real sheet's unnamed blank column between the frames and the action units.
CASME2_COLUMNS = (
    "Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", None,
    "Action Units", "Estimated Emotion",
)
SAMM_COLUMNS = (
    "Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame", "Duration", "Type",
    "Action Units", "Notes", "Estimated Emotion", "Objective Classes",
)
SAMM_TITLE_BLOCK = (
    "SAMM Micro-Movement Dataset",
    "FACS coding of micro-movements",
    "Synthetic sheet written by mepipe in the layout of SAMM_Micro_FACS_Codes_v2.xlsx.",
    "Frame numbers refer to the frame files of each clip (006_05562.jpg is frame 5562).",
    "Duration is the number of frames from the onset frame to the offset frame, both included.",
    "Apex Frame is empty or -1 where the coders gave no apex.",
    "Action Units follow FACS: L/R = left/right, A = asymmetric, A-E after a number = intensity.",
    "Inducement Code numbers the stimulus video that induced the movement.",
    "Objective Classes group the action units into the seven objective classes.",
    "Estimated Emotion is the coders' estimate from the action units and the stimulus.",
)
SAMM_HEADER_ROW = 13

#: The date every written sheet carries: CASME II's coding sheet is dated 2014-05-08.
FIXED_TIMESTAMP = datetime.datetime(2014, 5, 8, 0, 0, 0)

_CORE_PROPERTY_DATE = re.compile(rb"(<dcterms:(?:created|modified)\b[^>]*>)[^<]*(</dcterms:)")
_CONTENT_TYPES_ENTRY = "[Content_Types].xml"
_MISSING = object()


def write_casme2_sheet(path: str | Path, rows: Sequence[Mapping[str, Any] | Any]) -> None:
    """Write a CASME II coding sheet.

    Parameters
    ----------
    path : the ``.xlsx`` file to write (e.g. ``CASME2-coding-20140508.xlsx``); replaced whole.
    rows : one dict or record per clip with ``subject`` (``'sub01'`` or 1), ``clip``, ``onset``,
        ``apex`` (-1 and ``None`` are written as given: -1 or an empty cell), ``offset`` (frame
        numbers), ``action_units`` and ``emotion``.
    """
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Sheet1"
    sheet.append(list(CASME2_COLUMNS))
    for index, row in enumerate(rows):
        sheet.append([
            _subject_number(_field(row, "subject", index), "sub", index),
            _field(row, "clip", index),
            _optional_integer(_field(row, "onset", index), "onset", index),
            _optional_integer(_field(row, "apex", index), "apex", index),
            _optional_integer(_field(row, "offset", index), "offset", index),
            None,
            _action_unit_cell(_field(row, "action_units", index)),
            _field(row, "emotion", index),
        ])
    _save_deterministically(workbook, Path(path))


def write_samm_sheet(path: str | Path, rows: Sequence[Mapping[str, Any] | Any]) -> None:
    """Write a SAMM micro-movement coding sheet (title block, header on row 13, data from row 14).

    Parameters
    ----------
    path : the ``.xlsx`` file to write (e.g. ``SAMM_Micro_FACS_Codes_v2.xlsx``); replaced whole.
    rows : one dict or record per clip with ``subject`` (``'006'`` or 6), ``clip``,
        ``inducement_code``, ``onset``, ``apex`` (``None`` -> empty cell), ``offset``,
        ``duration`` (frames), ``type``, ``action_units``, ``emotion``, ``objective_class`` and,
        optionally, ``notes``.
    """
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    # The first (and only) worksheet; readers should take the first sheet, not this name.
    sheet.title = "MICRO_ONLY"
    for line_number, line in enumerate(SAMM_TITLE_BLOCK, start=1):
        sheet.cell(row=line_number, column=1, value=line)
    for column, name in enumerate(SAMM_COLUMNS, start=1):
        sheet.cell(row=SAMM_HEADER_ROW, column=column, value=name)
    for index, row in enumerate(rows):
        values = [
            _subject_number(_field(row, "subject", index), "", index),
            _field(row, "clip", index),
            _optional_integer(_field(row, "inducement_code", index), "inducement_code", index),
            _optional_integer(_field(row, "onset", index), "onset", index),
            _optional_integer(_field(row, "apex", index), "apex", index),
            _optional_integer(_field(row, "offset", index), "offset", index),
            _optional_integer(_field(row, "duration", index), "duration", index),
            _field(row, "type", index),
            _action_unit_cell(_field(row, "action_units", index)),
            _field(row, "notes", index, default=None) or None,
            _field(row, "emotion", index),
            _number_if_digits(_field(row, "objective_class", index)),
        ]
        for column, value in enumerate(values, start=1):
            sheet.cell(row=SAMM_HEADER_ROW + 1 + index, column=column, value=value)
    _save_deterministically(workbook, Path(path))


def _field(row: Mapping[str, Any] | Any, key: str, index: int, default: Any = _MISSING) -> Any:
    """A value from a dict or an attribute of a record; ``index`` is the 0-based row for errors."""
    if isinstance(row, Mapping):
        value = row.get(key, default)
    else:
        value = getattr(row, key, default)
    if value is _MISSING:
        raise DatasetError(f"sheet row {index + 1}: no {key!r} given; every row needs {key!r}")
    return value


def _subject_number(subject: str | int, folder_prefix: str, index: int) -> int:
    """The integer the sheets write for a subject folder (``sub01`` -> 1, ``006`` -> 6)."""
    if isinstance(subject, int) and not isinstance(subject, bool):
        return subject
    match = re.fullmatch(rf"{folder_prefix}(\d+)", str(subject).strip())
    if match is None:
        expected = f"{folder_prefix}01" if folder_prefix else "006"
        raise DatasetError(
            f"sheet row {index + 1}: subject {subject!r} is not a subject folder such as {expected!r}"
        )
    return int(match.group(1))


def _optional_integer(value: Any, key: str, index: int) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise DatasetError(f"sheet row {index + 1}: {key} {value!r} is not an integer")
    try:
        as_integer = int(value)
    except (TypeError, ValueError):
        raise DatasetError(f"sheet row {index + 1}: {key} {value!r} is not an integer") from None
    if as_integer != value and str(as_integer) != str(value).strip():
        raise DatasetError(f"sheet row {index + 1}: {key} {value!r} is not an integer")
    return as_integer


def _number_if_digits(value: Any) -> Any:
    """Digit-only text as the integer the real sheets store; anything else unchanged."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return value


def _action_unit_cell(action_units: Any) -> Any:
    """An AU string as the real sheets store it: ``12`` as the number 12, ``4+7`` as text."""
    if isinstance(action_units, float) and action_units.is_integer():
        return int(action_units)
    return _number_if_digits(action_units)


def _save_deterministically(workbook: openpyxl.Workbook, path: Path) -> None:
    workbook.properties.created = FIXED_TIMESTAMP
    workbook.properties.modified = FIXED_TIMESTAMP
    buffer = io.BytesIO()
    workbook.save(buffer)
    _write_atomically(path, _rezip_with_fixed_stamps(buffer.getvalue()))


def _rezip_with_fixed_stamps(xlsx_bytes: bytes) -> bytes:
    """Rewrite an .xlsx so it no longer depends on the clock.

    openpyxl stamps the save time into docProps/core.xml (even over a preset ``modified``) and
    into every zip entry header; both are set to :data:`FIXED_TIMESTAMP`. Entries are sorted by
    name, ``[Content_Types].xml`` first as Office writes it, with one fixed compression.
    """
    fixed_stamp = FIXED_TIMESTAMP.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    output = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(xlsx_bytes)) as source, zipfile.ZipFile(output, "w") as target:
        names = sorted(source.namelist(), key=lambda name: (name != _CONTENT_TYPES_ENTRY, name))
        for name in names:
            data = source.read(name)
            if name == "docProps/core.xml":
                data = _CORE_PROPERTY_DATE.sub(rb"\g<1>" + fixed_stamp + rb"\g<2>", data)
            entry = zipfile.ZipInfo(name, date_time=FIXED_TIMESTAMP.timetuple()[:6])
            entry.create_system = 0
            entry.external_attr = 0
            target.writestr(entry, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=6)
    return output.getvalue()


def _write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` whole: a reader never sees a half-written sheet."""
    handle, temporary_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as temporary_file:
            temporary_file.write(data)
            # mkstemp creates the file owner-only; a sheet is an ordinary readable file.
            os.fchmod(temporary_file.fileno(), 0o644)
        os.replace(temporary_name, path)
    except BaseException:
        Path(temporary_name).unlink(missing_ok=True)
        raise
