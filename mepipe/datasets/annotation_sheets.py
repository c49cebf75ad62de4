"""Reading the datasets' own annotation sheets: xlsx as shipped, or a CSV export of them.

Columns are found by name, never by position. Names are compared after lowering case and dropping
everything but letters and digits, so ``OnsetFrame``, ``Onset Frame`` and ``onset_frame`` are one
column. The header row is searched for (the SAMM sheet opens with a title block and some copies
put the header on row 13, others on row 14). Blank columns between (the CASME II sheet has some)
and extra columns are ignored.

Sheets come from wherever a dataset was copied from, so their XML is untrusted. openpyxl parses it
with defusedxml when that is installed (a dependency of mepipe): a sheet that declares XML entities
(the "billion laughs" expansion, external entities) is refused with a DatasetError naming it.
"""

from __future__ import annotations

import csv
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from mepipe.datasets.errors import DatasetError

# How far down a sheet the header is looked for.
_HEADER_SEARCH_ROWS = 40


@dataclass(frozen=True)
class SheetRow:
    """One data row: values by canonical column name, and where it sits in its file."""

    path: Path
    row_number: int  # 1-based, as a spreadsheet program shows it
    values: dict[str, object]
    headers: dict[str, str]  # canonical name -> the header as written

    def where(self, column: str | None = None) -> str:
        place = f"{self.path.name}, row {self.row_number}"
        return f"{place}, column '{self.headers[column]}'" if column else place


class MissingColumnError(DatasetError):
    """A sheet whose header lacks required columns: ``where`` (``<file>, row <n>``, the row taken
    for the header) and ``detail`` (which columns are missing and which the header has); the
    message is ``<where>: <detail>``, as every DatasetError of a sheet."""

    def __init__(self, where: str, detail: str):
        self.where, self.detail = where, detail
        super().__init__(f"{where}: {detail}")


def normalize_header(text: object) -> str:
    return re.sub(r"[^a-z0-9]", "", str(text).lower()) if text is not None else ""


def read_annotation_sheet(path: Path, columns: dict[str, tuple[str, ...]], required: tuple[str, ...]) -> list[SheetRow]:
    """Rows of an annotation sheet, with the values of the wanted columns.

    Parameters
    ----------
    path : ``.xlsx`` (first worksheet) or ``.csv``.
    columns : canonical name -> accepted header spellings (compared normalized).
    required : canonical names that must be present.

    Raises DatasetError naming the file when it cannot be read, and :class:`MissingColumnError`
    naming the missing columns (and the headers it did find) when no row holds every required
    column.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such annotation sheet")
    table = _read_xlsx(path) if path.suffix.lower() in (".xlsx", ".xlsm") else _read_csv(path)
    wanted = {canonical: {normalize_header(a) for a in aliases} for canonical, aliases in columns.items()}

    best_row, best_found = None, {}
    for index, cells in enumerate(table[:_HEADER_SEARCH_ROWS]):
        found = {}
        for position, cell in enumerate(cells):
            name = normalize_header(cell)
            for canonical, aliases in wanted.items():
                if name and name in aliases and canonical not in found:
                    found[canonical] = (position, str(cell).strip())
        if len([c for c in required if c in found]) > len([c for c in required if c in best_found]):
            best_row, best_found = index, found
        if all(c in found for c in required):
            break
    missing = [c for c in required if c not in best_found]
    if missing:
        expected = ", ".join(f"'{columns[c][0]}'" for c in missing)
        if best_row is None:
            raise DatasetError(f"{path}: no header row with the expected columns {expected} in its first {_HEADER_SEARCH_ROWS} rows")
        seen = ", ".join(repr(str(c).strip()) for c in table[best_row] if c not in (None, ""))
        raise MissingColumnError(f"{path}, row {best_row + 1}", f"missing column {expected} (the header has {seen})")

    headers = {canonical: text for canonical, (_, text) in best_found.items()}
    rows = []
    for index in range(best_row + 1, len(table)):
        cells = table[index]
        if all(cell is None or str(cell).strip() == "" for cell in cells):
            continue
        values = {
            canonical: _clean(cells[position]) if position < len(cells) else None
            for canonical, (position, _) in best_found.items()
        }
        rows.append(SheetRow(path, index + 1, values, headers))
    return rows


def _clean(value: object) -> object:
    if isinstance(value, str):
        value = value.strip()
        return value if value else None
    return value


def _read_xlsx(path: Path) -> list[list[object]]:
    import openpyxl

    # read_only parses the worksheet lazily, inside iter_rows: a bad sheet fails there, not on load
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
        try:
            return [list(row) for row in workbook.worksheets[0].iter_rows(values_only=True)]
        finally:
            workbook.close()
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, ElementTree.ParseError) as error:
        refused = _refused_xml(error)
        if refused is not None:
            raise DatasetError(
                f"{path}: refused: its XML declares entities ({type(refused).__name__}), which spreadsheet "
                f"programs never write and entity-expansion attacks need; re-save it from a spreadsheet program"
            ) from None
        # openpyxl's own messages run over several lines; a DatasetError is one
        raise DatasetError(f"{path}: cannot read it as an xlsx workbook ({type(error).__name__}: {' '.join(str(error).split())})") from None


def _refused_xml(error: BaseException) -> BaseException | None:
    """The error, or the one openpyxl wrapped, by which defusedxml (openpyxl's parser when it is
    installed) or expat's own guard refused entity declarations; None for any other error."""
    while error is not None:
        if any(cls.__name__ == "DefusedXmlException" for cls in type(error).__mro__):
            return error
        if isinstance(error, ElementTree.ParseError) and "amplification" in str(error):
            return error
        error = error.__cause__ or error.__context__
    return None


def _read_csv(path: Path) -> list[list[object]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return [row for row in csv.reader(handle)]
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not a UTF-8 CSV file (export the sheet as CSV UTF-8)") from None
    except csv.Error as error:
        raise DatasetError(f"{path}: not a readable CSV file ({error})") from None


def frame_number_cell(row: SheetRow, column: str) -> int | None:
    """A frame-number cell as an int; None when empty. DatasetError naming the cell otherwise."""
    value = row.values.get(column)
    if value is None:
        return None
    if isinstance(value, bool):
        raise DatasetError(f"{row.where(column)}: {value!r} is not a frame number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    text = str(value).strip()
    if re.fullmatch(r"-?\d+(\.0+)?", text):
        return int(float(text))
    raise DatasetError(f"{row.where(column)}: {value!r} is not a frame number; expected an integer")
