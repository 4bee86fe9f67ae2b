"""Loaders of the public formats into the data model (spec/data_model.md, "Loaders").

- `load_recbole`: RecBole atomic files (`<name>.inter`, optional `<name>.item`, `<name>.user`).
- `load_movielens_100k`: ml-100k (`u.data`, `u.item`, `u.user`).
- `load_movielens_1m`: ml-1m (`ratings.dat`, `movies.dat`, `users.dat`).
- `load_taobao`: the Taobao user-behaviour CSV (`user,item,category,behaviour,timestamp`, no header),
  read in chunks; pyarrow's CSV reader when the `[arrow]` extra is installed, a NumPy parser otherwise.

Every file is parsed column-wise by NumPy on its bytes (`_Table`): the line structure is found with
vectorized searches, fields are gathered into fixed-width byte arrays, integers are parsed digit by digit
over the whole column. No Python object is made per line. Malformed input (a line with the wrong number of
fields, an empty or non-numeric id, an unknown behaviour, bytes the file's encoding does not allow) is a
ValueError that names the file and the 1-based line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from numpy.typing import NDArray

from refimpl._check import IntArray, require_choice, require_int, require_positive_int
from refimpl.data.interactions import Interactions, build_interactions, dense_ids

__all__ = [
    "MOVIELENS_100K_GENRES",
    "MOVIELENS_PROFILE_FIELDS",
    "RECBOLE_CATEGORY_FIELDS",
    "RECBOLE_TYPES",
    "TAOBAO_BACKENDS",
    "TAOBAO_BEHAVIOURS",
    "TaobaoColumns",
    "FORMATS",
    "arrow_available",
    "load_interactions",
    "load_movielens_100k",
    "load_movielens_1m",
    "load_recbole",
    "load_taobao",
    "read_taobao_columns",
]

ByteArray = NDArray[np.uint8]
BytesColumn = NDArray[np.bytes_]

NEWLINE, CARRIAGE_RETURN, MINUS = 10, 13, 45
MAX_DIGITS = 18  # every 18-digit number fits in int64

TAOBAO_BEHAVIOURS = ("pv", "buy", "cart", "fav")
"""The Taobao behaviour codes: page view, purchase, add to cart, favourite (code = index)."""
TAOBAO_BACKENDS = ("auto", "arrow", "numpy")
ARROW_MIN_BLOCK = 1 << 20

MOVIELENS_100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
"""The 19 genre flags of ml-100k's `u.item`, in file order (the dataset's `u.genre`)."""
MOVIELENS_PROFILE_FIELDS = ("gender", "age", "occupation")
"""The user-profile fields kept from MovieLens (UMI's MovieLens profile); the zip code is dropped."""
RECBOLE_CATEGORY_FIELDS = ("category_id", "category", "categories", "genre", "class", "cate_id")
"""Fields `load_recbole` looks for, in this order, when no `category_field` is given."""
RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")


def _fail(path: Path, line: int, message: str) -> ValueError:
    return ValueError(f"{path}:{line}: {message}")


@dataclass(frozen=True)
class _Table:
    """The fields of every line of a delimited text (N lines, F fields), as byte ranges of `data`."""

    path: Path
    data: ByteArray  # the text's bytes, ending with a newline
    starts: IntArray  # (N, F) first byte of each field
    ends: IntArray  # (N, F) one past the last byte
    first_line: int  # file line number of row 0

    @property
    def num_rows(self) -> int:
        return int(self.starts.shape[0])

    def line(self, row: int) -> int:
        return self.first_line + row

    def fail(self, row: int, message: str) -> ValueError:
        return _fail(self.path, self.line(row), message)

    def text(self, row: int, column: int) -> str:
        raw = bytes(self.data[self.starts[row, column] : self.ends[row, column]])
        return raw.decode("latin-1")

    def gather(self, column: int) -> tuple[ByteArray, NDArray[np.bool_]]:
        """(N, W) bytes of a column's fields, zero past each field's end, and which bytes are inside."""
        first = self.starts[:, column]
        lengths = self.ends[:, column] - first
        width = max(int(lengths.max(initial=0)), 1)
        padded = np.concatenate([self.data, np.zeros(width, dtype=np.uint8)])
        # One row copy per field from a sliding view: no (N, W) index array.
        gathered = np.lib.stride_tricks.sliding_window_view(padded, width)[first]
        inside = np.arange(width) < lengths[:, None]
        gathered[~inside] = 0
        return gathered, inside

    def tokens(self, column: int, name: str, *, allow_empty: bool = False) -> BytesColumn:
        """A column as fixed-width byte strings (N,)."""
        if not allow_empty:
            self.require_nonempty(column, name)
        gathered, _ = self.gather(column)
        result: BytesColumn = np.ascontiguousarray(gathered).view(f"S{gathered.shape[1]}").ravel()
        return result

    def require_nonempty(self, column: int, name: str) -> None:
        empty = self.ends[:, column] == self.starts[:, column]
        if np.any(empty):
            raise self.fail(int(np.flatnonzero(empty)[0]), f"{name}: empty field")

    def integers(self, column: int, name: str, *, signed: bool = False) -> IntArray:
        """A column of decimal integers (N,) int64: digits only (and a leading '-' if `signed`)."""
        self.require_nonempty(column, name)
        starts = self.starts[:, column]
        negative = np.zeros(self.num_rows, dtype=bool)
        if signed:
            negative = (self.data[starts] == MINUS) & (self.ends[:, column] - starts > 1)
            starts = starts + negative
        ends = self.ends[:, column]
        lengths = ends - starts
        too_long = lengths > MAX_DIGITS
        if np.any(too_long):
            row = int(np.flatnonzero(too_long)[0])
            raise self.fail(row, f"{name}: more than {MAX_DIGITS} digits in {self.text(row, column)!r}")
        width = max(int(lengths.max(initial=0)), 1)
        # Right-aligned: row r holds the `width` bytes that end where its field ends.
        padded = np.concatenate([np.zeros(width, dtype=np.uint8), self.data])
        gathered = np.lib.stride_tricks.sliding_window_view(padded, width)[ends]
        inside = np.arange(width) >= width - lengths[:, None]
        digits = gathered - np.uint8(48)  # wraps every non-digit above 9
        bad = inside & (digits > 9)
        if np.any(bad):
            row = int(np.flatnonzero(bad.any(axis=1))[0])
            byte = int(gathered[row][bad[row]][0])
            if byte >= 128:
                raise self.fail(row, f"{name}: byte 0x{byte:02x} is not ASCII (bad encoding)")
            raise self.fail(row, f"{name}: expected {'an' if signed else 'a non-negative'} integer, got "
                                 f"{self.text(row, column)!r}")
        digits[~inside] = 0
        by_place = np.ascontiguousarray(digits.T)
        value = by_place[0].astype(np.int64)
        for place in by_place[1:]:
            value *= 10
            value += place
        result: IntArray = np.where(negative, -value, value)
        return result

    def floats(self, column: int, name: str) -> NDArray[np.float64]:
        """A column of decimal numbers (N,) float64."""
        column_bytes = self.tokens(column, name)
        try:
            return column_bytes.astype(np.float64)
        except ValueError:
            for row in range(self.num_rows):  # only on the failure path: find the line to name
                try:
                    float(column_bytes[row])
                except ValueError:
                    raise self.fail(row, f"{name}: expected a number, got {self.text(row, column)!r}") from None
            raise


def _table(path: Path, data: ByteArray, delimiter: bytes, num_fields: int, first_line: int = 1) -> _Table:
    """Find the fields of every line. Lines end with LF or CRLF; every line must have `num_fields`."""
    if data.shape[0] == 0:
        empty = np.zeros((0, num_fields), dtype=np.int64)
        return _Table(path, np.array([NEWLINE], dtype=np.uint8), empty, empty, first_line)
    if data[-1] != NEWLINE:
        data = np.concatenate([data, np.array([NEWLINE], dtype=np.uint8)])
    is_newline = data == NEWLINE
    separators = np.flatnonzero(is_newline | (data == delimiter[0]))
    newlines = np.flatnonzero(is_newline)
    if separators.shape[0] != newlines.shape[0] * num_fields or not np.all(
        data[separators[num_fields - 1 :: num_fields]] == NEWLINE
    ):
        _raise_field_count(path, data, delimiter, num_fields, newlines, first_line)
    bounds = separators.reshape(-1, num_fields)
    starts = np.empty_like(bounds)
    starts[:, 0] = np.concatenate([[0], newlines[:-1] + 1])
    starts[:, 1:] = bounds[:, :-1] + 1
    ends = bounds.copy()
    crlf = (ends[:, -1] > starts[:, -1]) & (data[np.maximum(ends[:, -1] - 1, 0)] == CARRIAGE_RETURN)
    ends[:, -1] -= crlf
    return _Table(path, data, starts.astype(np.int64), ends.astype(np.int64), first_line)


def _raise_field_count(
    path: Path, data: ByteArray, delimiter: bytes, num_fields: int, newlines: IntArray, first_line: int
) -> NoReturn:
    """Name the first line whose field count is wrong (only runs on malformed input)."""
    delimiters_before = np.concatenate([[0], np.cumsum(data == delimiter[0])])[newlines]
    per_line = np.diff(np.concatenate([[0], delimiters_before]))
    row = int(np.flatnonzero(per_line != num_fields - 1)[0])
    line_start = 0 if row == 0 else int(newlines[row - 1]) + 1
    text = bytes(data[line_start : newlines[row]]).decode("latin-1")
    raise _fail(path, first_line + row, f"expected {num_fields} fields separated by {delimiter!r}, got "
                                        f"{per_line[row] + 1}: {text[:80]!r}")


def _path(name: str, value: object) -> Path:
    """A str or os.PathLike argument as a Path (TypeError naming the argument otherwise)."""
    if not isinstance(value, str | os.PathLike):
        raise TypeError(f"{name}: expected a str or os.PathLike path, got {type(value).__name__}")
    return Path(value)


def _require_file(path: Path) -> None:
    """spec/conventions.md, "Files": FileNotFoundError for a missing file, ValueError for a path
    that is not a regular file; both messages start with the path."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path}: expected a file, got a {'directory' if path.is_dir() else 'special file'}")


def _read(path: Path) -> ByteArray:
    _require_file(path)
    return np.fromfile(path, dtype=np.uint8)


def _min_rating(min_rating: int | None) -> int | None:
    return None if min_rating is None else require_int("min_rating", min_rating)


def _require_ascii(path: Path, data: ByteArray, first_line: int = 1) -> None:
    high = np.flatnonzero(data >= 128)
    if high.shape[0]:
        line = first_line + int(np.count_nonzero(data[: high[0]] == NEWLINE))
        raise _fail(path, line, f"byte 0x{int(data[high[0]]):02x} is not ASCII (bad encoding)")


def _require_utf8(path: Path, data: ByteArray) -> None:
    try:
        data.tobytes().decode("utf-8")
    except UnicodeDecodeError as error:
        line = 1 + int(np.count_nonzero(data[: error.start] == NEWLINE))
        raise _fail(path, line, f"not UTF-8 (bad encoding): {error.reason} at byte {error.start}") from None


def _decode(column: BytesColumn, encoding: str) -> NDArray[np.str_]:
    """Decode a byte-string column via its distinct values only (few, against one per line)."""
    unique, inverse = np.unique(column, return_inverse=True)
    decoded = np.array([value.decode(encoding) for value in unique.tolist()], dtype=str)
    result: NDArray[np.str_] = decoded[inverse.ravel()] if unique.shape[0] else np.zeros(0, dtype=str)
    return result


def _split_double_colon(path: Path, data: ByteArray) -> ByteArray:
    """ml-1m separates fields by '::'; turn it into one byte (0x1f, unit separator) for `_table`."""
    if np.any(data == 0x1F):
        raise _fail(path, 1 + int(np.count_nonzero(data[: np.flatnonzero(data == 0x1F)[0]] == NEWLINE)),
                    "unexpected control byte 0x1f")
    raw = data.tobytes().replace(b"::", b"\x1f")
    return np.frombuffer(raw, dtype=np.uint8)


# ---------------------------------------------------------------------------------------------- MovieLens


def _ratings(path: Path, table: _Table, min_rating: int | None) -> tuple[IntArray, IntArray, IntArray]:
    users = table.integers(0, "user id")
    items = table.integers(1, "item id")
    ratings = table.integers(2, "rating")
    timestamps = table.integers(3, "timestamp", signed=True)
    keep = np.ones(table.num_rows, dtype=bool) if min_rating is None else ratings >= min_rating
    if table.num_rows == 0 or not np.any(keep):
        raise ValueError(f"{path}: no interactions")
    return users[keep], items[keep], timestamps[keep]


def _require_ids(table: _Table, column: int, name: str) -> IntArray:
    ids = table.integers(column, name)
    order = np.argsort(ids, kind="stable")
    repeated = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if repeated.shape[0]:
        raise table.fail(int(order[repeated[0] + 1]), f"{name} {ids[order][repeated[0]]} is listed twice")
    return ids


def _movielens_profile(table: _Table, columns: tuple[int, int, int]) -> dict[str, NDArray[np.str_]]:
    return {
        name: _decode(table.tokens(column, name), "ascii")
        for name, column in zip(MOVIELENS_PROFILE_FIELDS, columns, strict=True)
    }


def load_movielens_100k(directory: str | os.PathLike[str], *, min_rating: int | None = None) -> Interactions:
    """ml-100k: `u.data` (user, item, rating, timestamp; tab-separated), `u.item` ('|'-separated, title
    and dates, then the 19 genre flags of `MOVIELENS_100K_GENRES`), `u.user` (id|age|gender|occupation|zip).

    Every rating is an interaction (or those >= `min_rating`). Category rule: the first genre whose flag is
    set, in the file's genre order ("unknown" is one of ml-100k's genres); a movie with no flag set gets the
    unknown category. Profile: gender, age (years, as a token) and occupation. `u.data` and `u.user` must be
    ASCII; `u.item` is Latin-1 (its titles), of which only the id and flags are read.
    """
    root = _path("directory", directory)
    min_rating = _min_rating(min_rating)
    ratings_path, items_path, users_path = root / "u.data", root / "u.item", root / "u.user"
    ratings_data = _read(ratings_path)
    _require_ascii(ratings_path, ratings_data)
    users, items, timestamps = _ratings(ratings_path, _table(ratings_path, ratings_data, b"\t", 4), min_rating)

    movies = _table(items_path, _read(items_path), b"|", 5 + len(MOVIELENS_100K_GENRES))
    movie_ids = _require_ids(movies, 0, "movie id")
    flags = np.stack([movies.integers(5 + g, f"genre flag {name!r}")
                      for g, name in enumerate(MOVIELENS_100K_GENRES)], axis=1)
    not_flag = flags > 1
    if np.any(not_flag):
        row = int(np.flatnonzero(not_flag.any(axis=1))[0])
        raise movies.fail(row, f"genre flags: expected 0 or 1, got {flags[row].tolist()}")
    has_genre = flags.any(axis=1)
    genre = np.array(MOVIELENS_100K_GENRES)[np.argmax(flags, axis=1)]

    user_data = _read(users_path)
    _require_ascii(users_path, user_data)
    people = _table(users_path, user_data, b"|", 5)
    profile_users = _require_ids(people, 0, "user id")
    return build_interactions(
        users, items, timestamps,
        catalogue_items=movie_ids[has_genre],
        catalogue_categories=genre[has_genre],
        profile_users=profile_users,
        profile_fields=_movielens_profile(people, (2, 1, 3)),
        source=f"movielens-100k {root}",
    )


def load_movielens_1m(directory: str | os.PathLike[str], *, min_rating: int | None = None) -> Interactions:
    """ml-1m: `ratings.dat` (UserID::MovieID::Rating::Timestamp), `movies.dat` (MovieID::Title::Genres,
    genres '|'-separated, Latin-1), `users.dat` (UserID::Gender::Age::Occupation::Zip-code).

    Every rating is an interaction (or those >= `min_rating`). Category rule: the first listed genre of a
    movie; a movie with an empty genre list gets the unknown category. Profile: gender, age (the
    dataset's age-group code) and occupation (its code), as tokens; the zip code is dropped.
    """
    root = _path("directory", directory)
    min_rating = _min_rating(min_rating)
    ratings_path, movies_path, users_path = root / "ratings.dat", root / "movies.dat", root / "users.dat"
    ratings_data = _read(ratings_path)
    _require_ascii(ratings_path, ratings_data)
    ratings = _table(ratings_path, _split_double_colon(ratings_path, ratings_data), b"\x1f", 4)
    users, items, timestamps = _ratings(ratings_path, ratings, min_rating)

    movies = _table(movies_path, _split_double_colon(movies_path, _read(movies_path)), b"\x1f", 3)
    movie_ids = _require_ids(movies, 0, "movie id")
    genres, inside = movies.gather(2)
    bar = (genres == ord("|")) & inside
    first_end = np.where(bar.any(axis=1), np.argmax(bar, axis=1), inside.sum(axis=1))
    first_genre = _Table(movies.path, movies.data, movies.starts[:, 2:], movies.starts[:, 2:] +
                         first_end[:, None], movies.first_line).tokens(0, "genre", allow_empty=True)
    has_genre = first_end > 0

    user_data = _read(users_path)
    _require_ascii(users_path, user_data)
    people = _table(users_path, _split_double_colon(users_path, user_data), b"\x1f", 5)
    profile_users = _require_ids(people, 0, "user id")
    return build_interactions(
        users, items, timestamps,
        catalogue_items=movie_ids[has_genre],
        catalogue_categories=_decode(first_genre[has_genre], "latin-1"),
        profile_users=profile_users,
        profile_fields=_movielens_profile(people, (1, 2, 3)),
        source=f"movielens-1m {root}",
    )


# ------------------------------------------------------------------------------------------------ RecBole


@dataclass(frozen=True)
class _AtomicFile:
    path: Path
    fields: tuple[str, ...]
    types: tuple[str, ...]
    table: _Table

    def column(self, name: str) -> int:
        return self.fields.index(name)

    def has(self, name: str) -> bool:
        return name in self.fields

    def tokens(self, name: str, *, first_of_sequence: bool = False) -> NDArray[np.str_]:
        """A token field (N,); of a token_seq field with `first_of_sequence`, its first token."""
        column = self.column(name)
        kind = self.types[column]
        if kind == "token_seq" and first_of_sequence:
            gathered, inside = self.table.gather(column)
            space = (gathered == ord(" ")) & inside
            first_end = np.where(space.any(axis=1), np.argmax(space, axis=1), inside.sum(axis=1))
            starts = self.table.starts[:, column : column + 1]
            sub = _Table(self.path, self.table.data, starts, starts + first_end[:, None], self.table.first_line)
            return _decode(sub.tokens(0, name, allow_empty=True), "utf-8")
        if kind != "token":
            raise ValueError(f"{self.path}: field {name!r} is {kind}, expected token")
        return _decode(self.table.tokens(column, name), "utf-8")


def _atomic(path: Path) -> _AtomicFile:
    data = _read(path)
    _require_utf8(path, data)
    newline = np.flatnonzero(data == NEWLINE)
    header_end = int(newline[0]) if newline.shape[0] else data.shape[0]
    header = data[:header_end].tobytes().decode("utf-8").rstrip("\r").split("\t")
    fields: list[str] = []
    types: list[str] = []
    for entry in header:
        name, colon, kind = entry.rpartition(":")
        if not colon or not name or kind not in RECBOLE_TYPES:
            raise _fail(path, 1, f"header field {entry!r}: expected name:type with type one of {RECBOLE_TYPES}")
        fields.append(name)
        types.append(kind)
    if len(set(fields)) != len(fields):
        raise _fail(path, 1, f"header names a field twice: {fields}")
    table = _table(path, data[header_end + 1 :], b"\t", len(fields), first_line=2)
    return _AtomicFile(path, tuple(fields), tuple(types), table)


def _require_field(file: _AtomicFile, name: str, role: str) -> None:
    if not file.has(name):
        raise ValueError(f"{file.path}: no {role} field {name!r}; its fields are {list(file.fields)}")


def load_recbole(
    directory: str | os.PathLike[str],
    dataset: str | None = None,
    *,
    user_field: str = "user_id",
    item_field: str = "item_id",
    time_field: str | None = "timestamp",
    category_field: str | None = None,
    behaviour_field: str | None = None,
    profile_fields: tuple[str, ...] | None = None,
) -> Interactions:
    """RecBole atomic files `<directory>/<dataset>.inter` (and `.item`, `.user` when present).

    An atomic file is UTF-8, tab-separated, with a header line of `name:type` fields (type token,
    token_seq, float or float_seq); token_seq values are space-separated. `dataset` defaults to the
    directory's name (RecBole's layout). Ids are tokens (kept as str). Time: `time_field` (float or
    token); `time_field=None` takes file order as time. Category rule: the `category_field` of `.item`
    (else of `.inter`, the item's first line), by default the first of `RECBOLE_CATEGORY_FIELDS` present;
    of a token_seq field the first token; an item without one gets the unknown category. Behaviour: the
    optional token field `behaviour_field` of `.inter`. Profile: `profile_fields` of `.user`, by default
    every token field but the user id.
    """
    root = _path("directory", directory)
    name = dataset if dataset is not None else root.name
    inter = _atomic(root / f"{name}.inter")
    for field_name, role in ((user_field, "user"), (item_field, "item")):
        _require_field(inter, field_name, role)
    users, items = inter.tokens(user_field), inter.tokens(item_field)
    if time_field is None:
        timestamps: NDArray[Any] = np.arange(inter.table.num_rows, dtype=np.int64)
    else:
        _require_field(inter, time_field, "time")
        column = inter.column(time_field)
        timestamps = (inter.table.floats(column, time_field) if inter.types[column] == "float"
                      else inter.table.integers(column, time_field, signed=True))
    behaviours: IntArray | None = None
    behaviour_names: tuple[str, ...] = ()
    if behaviour_field is not None:
        _require_field(inter, behaviour_field, "behaviour")
        names, behaviours = np.unique(inter.tokens(behaviour_field), return_inverse=True)
        behaviour_names = tuple(str(n) for n in names)

    item_file = _atomic(root / f"{name}.item") if (root / f"{name}.item").is_file() else None
    sources = [f for f in (item_file, inter) if f is not None]
    wanted = (category_field,) if category_field is not None else RECBOLE_CATEGORY_FIELDS
    found = [(f, c) for c in wanted for f in sources if f.has(c)]
    if not found:
        raise ValueError(f"{root}: no category field {list(wanted)} in {[str(f.path) for f in sources]}; "
                         f"name one with category_field")
    category_file, chosen = found[0]
    _require_field(category_file, item_field, "item")
    category_items = category_file.tokens(item_field)
    categories = category_file.tokens(chosen, first_of_sequence=True)
    _, first = np.unique(category_items, return_index=True)  # .inter: an item's first line decides
    first = np.sort(first)
    if category_file is item_file and first.shape[0] != category_items.shape[0]:
        row = int(np.setdiff1d(np.arange(category_items.shape[0]), first)[0])
        raise category_file.table.fail(row, f"item {category_items[row].item()!r} is listed twice")
    has_category = categories[first] != ""

    profile_users, profile = None, None
    if (root / f"{name}.user").is_file():
        user_file = _atomic(root / f"{name}.user")
        _require_field(user_file, user_field, "user")
        chosen_fields = profile_fields if profile_fields is not None else tuple(
            f for f, t in zip(user_file.fields, user_file.types, strict=True) if t == "token" and f != user_field)
        profile_users = user_file.tokens(user_field)
        for field_name in chosen_fields:
            _require_field(user_file, field_name, "profile")
        profile = {f: user_file.tokens(f) for f in chosen_fields}
    elif profile_fields:
        raise ValueError(f"profile_fields: {root / f'{name}.user'} does not exist")
    return build_interactions(
        users, items, timestamps,
        behaviours=behaviours,
        behaviour_names=behaviour_names,
        catalogue_items=category_items[first][has_category],
        catalogue_categories=categories[first][has_category],
        profile_users=profile_users,
        profile_fields=profile,
        source=f"recbole {root / name}",
    )


# ------------------------------------------------------------------------------------------------- Taobao


@dataclass(frozen=True)
class TaobaoColumns:
    """The parsed columns of a Taobao user-behaviour file, in file order (E,)."""

    users: IntArray
    items: IntArray
    categories: IntArray
    behaviours: NDArray[np.int8]  # codes into TAOBAO_BEHAVIOURS
    timestamps: IntArray


def _taobao_chunk(table: _Table) -> TaobaoColumns:
    behaviour_bytes = table.tokens(3, "behaviour")
    codes = np.full(table.num_rows, -1, dtype=np.int8)
    for code, name in enumerate(TAOBAO_BEHAVIOURS):
        codes[behaviour_bytes == name.encode()] = code
    unknown = np.flatnonzero(codes < 0)
    if unknown.shape[0]:
        row = int(unknown[0])
        raise table.fail(row, f"behaviour: expected one of {TAOBAO_BEHAVIOURS}, got {table.text(row, 3)!r}")
    return TaobaoColumns(
        users=table.integers(0, "user id"),
        items=table.integers(1, "item id"),
        categories=table.integers(2, "category id"),
        behaviours=codes,
        timestamps=table.integers(4, "timestamp", signed=True),
    )


def _numpy_chunks(path: Path, chunk_bytes: int) -> Iterator[TaobaoColumns]:
    line = 1
    carry = np.zeros(0, dtype=np.uint8)
    with path.open("rb") as stream:
        while True:
            block = np.frombuffer(stream.read(chunk_bytes), dtype=np.uint8)
            final = block.shape[0] == 0
            data = np.concatenate([carry, block]) if carry.shape[0] else block
            if final:
                if data.shape[0]:
                    _require_ascii(path, data, line)
                    yield _taobao_chunk(_table(path, data, b",", 5, line))
                return
            newlines = np.flatnonzero(data == NEWLINE)
            cut = int(newlines[-1]) + 1 if newlines.shape[0] else 0
            carry = data[cut:].copy()
            if cut:
                _require_ascii(path, data[:cut], line)
                yield _taobao_chunk(_table(path, data[:cut], b",", 5, line))
                line += newlines.shape[0]


def _arrow_chunks(path: Path, chunk_bytes: int) -> Iterator[TaobaoColumns]:
    import pyarrow as pa  # the [arrow] extra
    from pyarrow import csv

    names = ["user", "item", "category", "behaviour", "timestamp"]
    reader = csv.open_csv(
        path,
        # pyarrow refuses a line longer than a block; a block of at least 1 MiB holds any sane line.
        read_options=csv.ReadOptions(column_names=names, block_size=max(chunk_bytes, ARROW_MIN_BLOCK),
                                     use_threads=False),
        parse_options=csv.ParseOptions(delimiter=",", quote_char=False, ignore_empty_lines=False),
        convert_options=csv.ConvertOptions(
            column_types={"user": pa.int64(), "item": pa.int64(), "category": pa.int64(),
                          "behaviour": pa.dictionary(pa.int32(), pa.string()), "timestamp": pa.int64()},
            null_values=[], strings_can_be_null=False,
        ),
    )
    for batch in reader:
        if any(column.null_count for column in batch.columns):
            raise ValueError("empty field")
        behaviour = batch.column(3)
        names_in_batch = behaviour.dictionary.to_pylist()
        if any(n not in TAOBAO_BEHAVIOURS for n in names_in_batch):
            raise ValueError("unknown behaviour")
        lookup = np.array([TAOBAO_BEHAVIOURS.index(n) for n in names_in_batch], dtype=np.int8)
        yield TaobaoColumns(
            users=batch.column(0).to_numpy(),
            items=batch.column(1).to_numpy(),
            categories=batch.column(2).to_numpy(),
            behaviours=lookup[behaviour.indices.to_numpy()],
            timestamps=batch.column(4).to_numpy(),
        )


def arrow_available() -> bool:
    """Whether the `[arrow]` extra (pyarrow) is installed."""
    try:
        import pyarrow.csv  # noqa: F401
    except ImportError:
        return False
    return True


def read_taobao_columns(
    path: str | os.PathLike[str], *, backend: str = "auto", chunk_bytes: int = 1 << 24
) -> TaobaoColumns:
    """Parse a Taobao user-behaviour CSV into columns, `chunk_bytes` of the file at a time (the arrow back
    end reads at least `ARROW_MIN_BLOCK` at a time).

    backend: "arrow" (pyarrow's streaming CSV reader, the `[arrow]` extra), "numpy" (the NumPy parser of
    this module) or "auto" (arrow when installed). Both give the same columns and the same errors (pyarrow
    does not say on which line a file is malformed, so on any error the NumPy parser reads the file again
    to name the line), with one difference: pyarrow accepts spaces around a number, the NumPy parser
    refuses them.
    """
    source = _path("path", path)
    require_choice("backend", backend, TAOBAO_BACKENDS)
    size = require_positive_int("chunk_bytes", chunk_bytes)
    _require_file(source)
    use_arrow = backend == "arrow" or (backend == "auto" and arrow_available())
    if backend == "arrow" and not arrow_available():
        raise ValueError("backend: 'arrow' needs pyarrow (pip install 'refimpl[arrow]')")
    if use_arrow:
        try:
            chunks = list(_arrow_chunks(source, size))
        except ValueError as error:  # pyarrow's errors carry no line number: the NumPy parser names it
            for _ in _numpy_chunks(source, size):
                pass
            raise ValueError(f"{source}: {error}") from error
    else:
        chunks = list(_numpy_chunks(source, size))
    if not chunks or sum(c.users.shape[0] for c in chunks) == 0:
        raise ValueError(f"{source}: no interactions")
    # Column by column, each column's chunks freed once joined: the peak is the chunks plus one column.
    names = ("users", "items", "categories", "behaviours", "timestamps")
    pending = {name: [getattr(chunk, name) for chunk in chunks] for name in names}
    del chunks
    joined = [np.concatenate(pending.pop(name)) for name in names]
    return TaobaoColumns(*joined)


def load_taobao(
    path: str | os.PathLike[str], *, backend: str = "auto", chunk_bytes: int = 1 << 24,
    category_conflict: str = "first",
) -> Interactions:
    """The Taobao user-behaviour CSV: lines `user,item,category,behaviour,timestamp`, no header, ASCII.

    Behaviours are `TAOBAO_BEHAVIOURS`; anything else is an error. Category rule: each line names its
    item's category; an item's category is the one on its first line in the file, and an item whose lines
    disagree is an error with `category_conflict="error"`. Every item has a category, so the unknown
    category never occurs. See `read_taobao_columns` for `backend` and `chunk_bytes`.
    """
    require_choice("category_conflict", category_conflict, ("first", "error"))
    columns = read_taobao_columns(path, backend=backend, chunk_bytes=chunk_bytes)
    unique_items, item_of_event = dense_ids("items", columns.items)
    first = np.full(unique_items.shape[0], columns.items.shape[0], dtype=np.int64)
    np.minimum.at(first, item_of_event, np.arange(columns.items.shape[0], dtype=np.int64))
    item_category = columns.categories[first]
    conflict = np.flatnonzero(columns.categories != item_category[item_of_event])
    if category_conflict == "error" and conflict.shape[0]:
        row = int(conflict[0])
        raise _fail(Path(path), row + 1, f"item {columns.items[row]} has category {columns.categories[row]} "
                                         f"here but {item_category[item_of_event[row]]} on its first line")
    del item_of_event, first
    return build_interactions(
        columns.users, columns.items, columns.timestamps,
        behaviours=columns.behaviours,
        behaviour_names=TAOBAO_BEHAVIOURS,
        catalogue_items=unique_items,
        catalogue_categories=item_category,
        source=f"taobao {path}",
    )


FORMATS = ("movielens-100k", "movielens-1m", "recbole", "taobao")
"""The `--format` names of `load_interactions` (the demos' `--data PATH --format FMT`)."""


def load_interactions(path: str | os.PathLike[str], data_format: str) -> Interactions:
    """The log at `path` in `data_format` (FORMATS), each loader with its defaults: ml-100k and ml-1m
    read a directory of their raw files, RecBole a directory of atomic files, Taobao one CSV."""
    if data_format not in FORMATS:
        raise ValueError(f"data_format: expected one of {FORMATS}, got {data_format!r}")
    if data_format == "movielens-100k":
        return load_movielens_100k(path)
    if data_format == "movielens-1m":
        return load_movielens_1m(path)
    if data_format == "recbole":
        return load_recbole(path)
    return load_taobao(path)
