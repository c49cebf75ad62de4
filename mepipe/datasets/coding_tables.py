"""Coding tables in mepipe's reference CSV formats -> validated :class:`CodingRow` records.

Three formats, told apart by their header (columns are found by name, in any order; extra
columns are ignored; names match case-insensitively with spaces or hyphens read as ``_``):

==========  ==================================================================================
format      columns
==========  ==================================================================================
casme2      subject, clip, onset, apex, offset, action_units, emotion, first_frame, last_frame,
            n_frames (optional: checked against last_frame - first_frame + 1 when present)
samm        subject, clip, inducement_code, onset, apex, offset, action_units, emotion,
            objective_class, duration and type (both optional; duration is the clip's frame
            count, checked against offset - onset + 1 when present)
composite   dataset, subject, clip, label (the MEGC2019 3-class composite list)
==========  ==================================================================================

Frame numbers are the datasets' own (CASME II ``img46.jpg`` is frame 46). Values are taken as
the sheet has them and never repaired here: an apex of -1 stays -1, an empty apex is ``None``.
Every problem is a :class:`DatasetError` naming the file, the row (1-based, header = row 1) and
the column.
"""

from __future__ import annotations

import csv
import importlib.resources
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mepipe.datasets.action_units import parse_action_units
from mepipe.datasets.errors import DatasetError

#: Source datasets a coding row can belong to.
DATASETS = ("casme2", "samm", "smic")

COMPOSITE_MANIFEST_RESOURCE = "data/megc2019_composite.csv"

# A spreadsheet exporting its numbers as floats writes frame 46 as "46.0"; int() alone would also
# take "4_6", which no sheet means.
_INTEGER_PATTERN = re.compile(r"(?P<digits>[+-]?\d+)(?:\.0*)?")


@dataclass(frozen=True, slots=True)
class CodingRow:
    """One coded clip of one dataset.

    Attributes
    ----------
    dataset : ``'casme2'``, ``'samm'`` or ``'smic'``.
    subject : the subject as the table writes it (``'sub01'``, ``'006'``, ``'s01'``).
    clip : the clip name (``'EP02_01f'``, ``'006_1_2'``, ``'s01_ne_01'``).
    emotion : the emotion as coded (``'happiness'``, ``'Anger'``) or the composite 3-class label
        (``'negative'``, ``'positive'``, ``'surprise'``).
    action_units : the FACS action-unit string as written, ``''`` when absent.
    onset, apex, offset : frame numbers of the expression; ``None`` when the cell is empty. An
        apex of -1 is the sheet's own value and is kept as -1.
    first_frame, last_frame : frame numbers of the first and last frame of the clip (inclusive);
        for SAMM these are the onset and offset frames.
    inducement_code : SAMM's inducement (stimulus video) code, else ``None``.
    objective_class : SAMM's objective class, as text, else ``None``.
    row_number : 1-based line of the row in its file; the header is line 1.
    """

    dataset: str
    subject: str
    clip: str
    emotion: str
    action_units: str
    onset: int | None
    apex: int | None
    offset: int | None
    first_frame: int | None
    last_frame: int | None
    inducement_code: int | None
    objective_class: str | None
    row_number: int

    @property
    def n_frames(self) -> int | None:
        """Number of frames in the clip (``last_frame - first_frame + 1``), ``None`` if unknown."""
        if self.first_frame is None or self.last_frame is None:
            return None
        return self.last_frame - self.first_frame + 1


@dataclass(frozen=True, slots=True)
class _TableFormat:
    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    # Columns no other format has: their presence says which format a header means.
    distinctive: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return self.required + self.optional


_FORMATS = (
    _TableFormat(
        name="casme2",
        required=("subject", "clip", "onset", "apex", "offset", "action_units", "emotion",
                  "first_frame", "last_frame"),
        optional=("n_frames",),
        distinctive=("first_frame", "last_frame", "n_frames"),
    ),
    _TableFormat(
        name="samm",
        required=("subject", "clip", "inducement_code", "onset", "apex", "offset", "action_units",
                  "emotion", "objective_class"),
        optional=("duration", "type"),
        distinctive=("inducement_code", "duration", "type", "objective_class"),
    ),
    _TableFormat(
        name="composite",
        required=("dataset", "subject", "clip", "label"),
        optional=(),
        distinctive=("dataset", "label"),
    ),
)


def read_coding_table(path: str | Path, dataset: str | None = None) -> tuple[str, list[CodingRow]]:
    """Read and validate one coding table.

    Parameters
    ----------
    path : a CSV file in one of the formats of the module docstring.
    dataset : for a composite table, keep only the rows of this dataset (``'casme2'``, ``'samm'``
        or ``'smic'``); for a casme2/samm table it must be that table's own dataset or ``None``.

    Returns
    -------
    (format name: ``'casme2'``, ``'samm'`` or ``'composite'``, rows in file order)

    Raises
    ------
    DatasetError : missing or unreadable file, unknown header, missing column, bad cell, clip
        listed twice, or a table that cannot make the requested dataset.
    """
    path = Path(path)
    if dataset is not None and dataset not in DATASETS:
        raise DatasetError(f"{path}: unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    records = _read_csv_records(path)
    header_row_number, header = next(records, (0, []))
    if not header:
        raise DatasetError(f"{path}: has no header row (every line is blank); expected a coding table CSV")
    table_format, column_index = _identify_format(path, header_row_number, header)
    if dataset is not None and table_format.name != "composite" and dataset != table_format.name:
        raise DatasetError(
            f"{path}: this is a {table_format.name} coding table and cannot make a {dataset} set"
        )

    rows: list[CodingRow] = []
    first_row_of_clip: dict[tuple[str, str, str], int] = {}
    for row_number, values in records:
        cells = _RowCells(path, row_number, values, column_index)
        row = _ROW_READERS[table_format.name](cells)
        key = (row.dataset, row.subject, row.clip)
        if key in first_row_of_clip:
            raise DatasetError(
                f"{path}: row {row_number}, columns subject and clip: subject {row.subject!r} clip "
                f"{row.clip!r} is listed twice (rows {first_row_of_clip[key]} and {row_number}); "
                f"each (subject, clip) must appear once"
            )
        first_row_of_clip[key] = row_number
        rows.append(row)

    if not rows:
        raise DatasetError(f"{path}: the header (row {header_row_number}) is followed by no data rows")
    if dataset is not None:
        rows = [row for row in rows if row.dataset == dataset]
    return table_format.name, rows


def read_composite_manifest(dataset: str | None = None) -> list[CodingRow]:
    """The MEGC2019 composite list (442 clips) shipped inside the package.

    Parameters
    ----------
    dataset : keep only the rows of this dataset (``'casme2'``, ``'samm'``, ``'smic'``), or all.

    Returns
    -------
    Rows with ``emotion`` set to the 3-class label and no frame numbers.
    """
    resource = importlib.resources.files("mepipe.datasets").joinpath(COMPOSITE_MANIFEST_RESOURCE)
    with importlib.resources.as_file(resource) as manifest_path:
        _, rows = read_coding_table(manifest_path, dataset=dataset)
    return rows


def _read_csv_records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, cells) of every non-blank record; the first is the header.

    The file is read and checked in this call, before any record is asked for, so a missing,
    binary or empty file fails here.
    """
    if not path.exists():
        raise DatasetError(f"{path}: no such file; expected a coding table CSV")
    if not path.is_file():
        raise DatasetError(f"{path}: is not a file; expected a coding table CSV")
    try:
        # utf-8-sig: spreadsheet programs often save CSVs with a byte-order mark.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DatasetError(
            f"{path}: is not a UTF-8 text CSV (an .xlsx sheet must be converted or read with the "
            f"sheet reader); expected a coding table CSV"
        ) from None
    except OSError as error:
        raise DatasetError(
            f"{path}: cannot be read ({error.strerror}); expected a coding table CSV"
        ) from None
    if "\x00" in text:
        raise DatasetError(f"{path}: contains binary data; expected a coding table CSV")
    if not text.strip():
        raise DatasetError(f"{path}: is empty; expected a coding table CSV with a header row")
    return _iterate_records(path, text)


def _iterate_records(path: Path, text: str) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(text.splitlines(keepends=True))
    try:
        for values in reader:
            if any(value.strip() for value in values):
                yield reader.line_num, values
    except csv.Error as error:
        raise DatasetError(f"{path}: row {reader.line_num}: not valid CSV ({error})") from None


def _normalized_column_name(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().casefold())


def _identify_format(
    path: Path, header_row_number: int, header: Sequence[str]
) -> tuple[_TableFormat, dict[str, int]]:
    """Find the table's format from its header; returns the format and column name -> index."""
    column_index: dict[str, int] = {}
    for index, name in enumerate(header):
        normalized = _normalized_column_name(name)
        if not normalized:
            continue
        if normalized in column_index:
            raise DatasetError(
                f"{path}: row {header_row_number}: column {name.strip()!r} appears twice (columns "
                f"{column_index[normalized] + 1} and {index + 1}); each column name must appear once"
            )
        column_index[normalized] = index

    candidates = [fmt for fmt in _FORMATS if any(column in column_index for column in fmt.distinctive)]
    if not candidates:
        expected = "; ".join(f"{fmt.name}: {', '.join(fmt.columns)}" for fmt in _FORMATS)
        found = ", ".join(name.strip() for name in header if name.strip()) or "(no names)"
        raise DatasetError(
            f"{path}: row {header_row_number}: the header ({found}) matches no known coding table "
            f"format; expected columns {expected}"
        )
    if len(candidates) > 1:
        mixed = " and ".join(
            f"{fmt.name} ({', '.join(c for c in fmt.distinctive if c in column_index)})" for fmt in candidates
        )
        raise DatasetError(
            f"{path}: row {header_row_number}: the header mixes the columns of the {mixed} formats; use one format"
        )
    table_format = candidates[0]
    missing = [column for column in table_format.required if column not in column_index]
    if missing:
        optional = f" (optional: {', '.join(table_format.optional)})" if table_format.optional else ""
        raise DatasetError(
            f"{path}: row {header_row_number}: this {table_format.name} coding table lacks the "
            f"column{'s' if len(missing) > 1 else ''} {', '.join(missing)}; expected columns "
            f"{', '.join(table_format.required)}{optional}"
        )
    return table_format, column_index


class _RowCells:
    """The cells of one data row, read by column name, with errors that say where they are."""

    def __init__(self, path: Path, row_number: int, values: list[str], column_index: dict[str, int]):
        self.path = path
        self.row_number = row_number
        self._values = values
        self._column_index = column_index

    def where(self, column: str) -> str:
        return f"{self.path}: row {self.row_number}, column {column}"

    def text(self, column: str) -> str:
        """The stripped cell text; ``''`` for an empty cell, or a column absent from the header."""
        index = self._column_index.get(column)
        if index is None or index >= len(self._values):
            return ""
        return self._values[index].strip()

    def required_text(self, column: str, expected: str) -> str:
        value = self.text(column)
        if not value:
            raise DatasetError(f"{self.where(column)}: the cell is empty; expected {expected}")
        return value

    def optional_integer(self, column: str, expected: str = "an integer frame number") -> int | None:
        value = self.text(column)
        if not value:
            return None
        match = _INTEGER_PATTERN.fullmatch(value)
        if match is None:
            raise DatasetError(f"{self.where(column)}: found {value!r}; expected {expected}")
        return int(match.group("digits"))

    def required_integer(self, column: str, expected: str = "an integer frame number") -> int:
        value = self.optional_integer(column, expected)
        if value is None:
            raise DatasetError(f"{self.where(column)}: the cell is empty; expected {expected}")
        return value

    def action_units(self, column: str = "action_units") -> str:
        value = self.text(column)
        # Parsed only to reject a malformed string here, where the row and column are known.
        parse_action_units(value, where=self.where(column))
        return value


def _check_frame_range(cells: _RowCells, first: int, last: int, first_column: str, last_column: str) -> None:
    if first > last:
        raise DatasetError(
            f"{cells.where(first_column)}: {first_column} {first} is after {last_column} {last}; "
            f"expected {first_column} <= {last_column}"
        )


def _read_casme2_row(cells: _RowCells) -> CodingRow:
    subject = cells.required_text("subject", "a subject such as sub01")
    clip = cells.required_text("clip", "a clip name such as EP02_01f")
    first_frame = cells.required_integer("first_frame")
    last_frame = cells.required_integer("last_frame")
    _check_frame_range(cells, first_frame, last_frame, "first_frame", "last_frame")
    n_frames = cells.optional_integer("n_frames", "an integer frame count")
    if n_frames is not None and n_frames != last_frame - first_frame + 1:
        raise DatasetError(
            f"{cells.where('n_frames')}: found {n_frames}; expected last_frame - first_frame + 1 = "
            f"{last_frame - first_frame + 1}"
        )
    return CodingRow(
        dataset="casme2",
        subject=subject,
        clip=clip,
        emotion=cells.required_text("emotion", "an emotion such as happiness"),
        action_units=cells.action_units(),
        onset=cells.required_integer("onset"),
        apex=cells.optional_integer("apex"),
        offset=cells.required_integer("offset"),
        first_frame=first_frame,
        last_frame=last_frame,
        inducement_code=None,
        objective_class=None,
        row_number=cells.row_number,
    )


def _read_samm_row(cells: _RowCells) -> CodingRow:
    subject = cells.required_text("subject", "a subject such as 006")
    clip = cells.required_text("clip", "a clip name such as 006_1_2")
    onset = cells.required_integer("onset")
    offset = cells.required_integer("offset")
    _check_frame_range(cells, onset, offset, "onset", "offset")
    duration = cells.optional_integer("duration", "an integer frame count")
    if duration is not None and duration != offset - onset + 1:
        raise DatasetError(
            f"{cells.where('duration')}: found {duration}; expected offset - onset + 1 = {offset - onset + 1}"
        )
    return CodingRow(
        dataset="samm",
        subject=subject,
        clip=clip,
        emotion=cells.required_text("emotion", "an emotion such as Anger"),
        action_units=cells.action_units(),
        onset=onset,
        apex=cells.optional_integer("apex"),
        offset=offset,
        first_frame=onset,
        last_frame=offset,
        inducement_code=cells.optional_integer("inducement_code", "an integer inducement code"),
        objective_class=cells.text("objective_class") or None,
        row_number=cells.row_number,
    )


def _read_composite_row(cells: _RowCells) -> CodingRow:
    dataset = cells.required_text("dataset", f"one of {', '.join(DATASETS)}")
    if dataset not in DATASETS:
        raise DatasetError(
            f"{cells.where('dataset')}: found {dataset!r}; expected one of {', '.join(DATASETS)}"
        )
    return CodingRow(
        dataset=dataset,
        subject=cells.required_text("subject", "a subject such as sub01, 006 or s01"),
        clip=cells.required_text("clip", "a clip name"),
        emotion=cells.required_text("label", "a label such as negative, positive or surprise"),
        action_units="",
        onset=None,
        apex=None,
        offset=None,
        first_frame=None,
        last_frame=None,
        inducement_code=None,
        objective_class=None,
        row_number=cells.row_number,
    )


_ROW_READERS = {
    "casme2": _read_casme2_row,
    "samm": _read_samm_row,
    "composite": _read_composite_row,
}
