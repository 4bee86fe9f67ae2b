"""Loaders on tiny files of each format (written here: no real data is committed), and malformed input."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refimpl.data import loaders
from refimpl.data.interactions import UNKNOWN_STR, Interactions
from refimpl.data.loaders import (
    TAOBAO_BEHAVIOURS,
    load_movielens_1m,
    load_movielens_100k,
    load_recbole,
    load_taobao,
    read_taobao_columns,
)


def events(log: Interactions) -> list[tuple[object, object]]:
    users, items = log.raw_events()
    return list(zip(users.tolist(), items.tolist(), strict=True))


def category_of(log: Interactions) -> dict[object, object]:
    return dict(zip(log.item_ids.tolist(), log.category_ids[log.item_category].tolist(), strict=True))


# ------------------------------------------------------------------------------------------------- Taobao

TAOBAO = (
    "1,10,100,pv,1511544070\n"
    "2,11,101,buy,1511544000\n"
    "1,12,100,cart,1511540000\n"
    "1,10,100,fav,1511544070\n"
    "2,10,100,pv,1511550000\n"
)
BACKENDS = ("numpy", "arrow")


@pytest.mark.parametrize("backend", BACKENDS)
def test_taobao(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "UserBehavior.csv"
    path.write_text(TAOBAO)
    log = load_taobao(path, backend=backend)
    # user 1: 12@1511540000, then two events at 1511544070 in file order (pv, then fav)
    assert events(log) == [(1, 12), (1, 10), (1, 10), (2, 11), (2, 10)]
    assert [TAOBAO_BEHAVIOURS[b] for b in log.behaviours.tolist()] == ["cart", "pv", "fav", "buy", "pv"]
    assert category_of(log) == {10: 100, 11: 101, 12: 100}
    assert log.unknown_category is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_taobao_chunks_give_the_same_columns(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "b.csv"
    path.write_text(TAOBAO * 7)
    whole = read_taobao_columns(path, backend=backend)
    small = read_taobao_columns(path, backend=backend, chunk_bytes=37)  # cuts lines in the middle
    for name in ("users", "items", "categories", "behaviours", "timestamps"):
        assert np.array_equal(getattr(whole, name), getattr(small, name)), name
    assert whole.users.shape == (35,)


def test_taobao_category_conflict_rule(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("1,10,100,pv,5\n2,10,200,pv,6\n")
    assert category_of(load_taobao(path, backend="numpy")) == {10: 100}  # the first line decides
    with pytest.raises(ValueError, match=r"c.csv:2: item 10 has category 200 here but 100"):
        load_taobao(path, backend="numpy", category_conflict="error")


MALFORMED_TAOBAO = {
    "short line": (b"1,10,100,pv\n", "expected 5 fields"),
    "non-numeric id": (b"1,1x,100,pv,5\n", "item id: expected a non-negative integer, got '1x'"),
    "unknown behaviour": (b"1,10,100,click,5\n", "behaviour: expected one of"),
    "bad encoding": (b"1,10,100,p\xe9,5\n", r"byte 0xe9 is not ASCII \(bad encoding\)"),
    "empty id": (b",10,100,pv,5\n", "user id: empty field"),
    "float id": (b"1,10.5,100,pv,5\n", "item id: expected a non-negative integer"),
    "blank line": (b"\n", "expected 5 fields"),
    "signed id": (b"1,+10,100,pv,5\n", "item id: expected a non-negative integer, got '\\+10'"),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(MALFORMED_TAOBAO))
def test_taobao_malformed_names_file_and_line(tmp_path: Path, backend: str, case: str) -> None:
    line, message = MALFORMED_TAOBAO[case]
    path = tmp_path / "bad.csv"
    good = TAOBAO.encode()
    path.write_bytes(good + good + line + good)  # the bad line is line 11, in the third 40-byte chunk or later
    with pytest.raises(ValueError, match=rf"bad.csv:11: {message}"):
        read_taobao_columns(path, backend=backend, chunk_bytes=40)
    path.write_bytes(good * 3)  # control: without the bad line the same file parses
    assert read_taobao_columns(path, backend=backend, chunk_bytes=40).users.shape == (15,)


def test_taobao_backend_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.csv"
    path.write_text(TAOBAO)
    monkeypatch.setattr(loaders, "arrow_available", lambda: False)
    assert read_taobao_columns(path).users.shape == (5,)  # "auto" falls back to NumPy
    with pytest.raises(ValueError, match="needs pyarrow"):
        read_taobao_columns(path, backend="arrow")
    with pytest.raises(ValueError, match="backend"):
        read_taobao_columns(path, backend="pandas")



def test_file_errors_name_the_path(tmp_path: Path) -> None:
    """spec/conventions.md, "Files": a missing file is a FileNotFoundError, a directory where a file
    is expected a ValueError, a path of the wrong type a TypeError; each message starts with the path
    (or the argument)."""
    missing = tmp_path / "missing.csv"
    with pytest.raises(FileNotFoundError, match=f"^{missing}: no such file"):
        read_taobao_columns(missing)
    with pytest.raises(ValueError, match=f"^{tmp_path}: expected a file, got a directory"):
        load_taobao(tmp_path)
    with pytest.raises(FileNotFoundError, match="u.data: no such file"):
        load_movielens_100k(tmp_path)
    write_ml100k(tmp_path)
    (tmp_path / "u.user").unlink()
    (tmp_path / "u.user").mkdir()
    with pytest.raises(ValueError, match="u.user: expected a file, got a directory"):
        load_movielens_100k(tmp_path)
    with pytest.raises(TypeError, match="^directory: expected a str or os.PathLike"):
        load_movielens_1m(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="^min_rating: expected an integer"):
        load_movielens_100k(tmp_path, min_rating=3.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- MovieLens

GENRES_OFF = "|".join(["0"] * 19)


def flags(*on: int) -> str:
    bits = ["0"] * 19
    for g in on:
        bits[g] = "1"
    return "|".join(bits)


def write_ml100k(root: Path, data: bytes | None = None) -> None:
    root.mkdir(exist_ok=True)
    (root / "u.data").write_bytes(data if data is not None else b"1\t20\t4\t881250949\n2\t10\t3\t891717742\n"
                                  b"1\t10\t5\t881250940\n1\t30\t1\t881250999\n")
    (root / "u.item").write_bytes(
        f"10|Toy Story (1995)|01-Jan-1995||http://x|{flags(3, 4, 5)}\n".encode()
        + f"20|Les Mis\xe9rables (1995)|01-Jan-1995||http://x|{flags(1, 8)}\n".encode("latin-1")
        + f"30|Nothing (1996)|01-Jan-1996||http://x|{GENRES_OFF}\n".encode()
    )
    (root / "u.user").write_bytes(b"1|24|M|technician|85711\n2|53|F|other|94043\n")


def test_movielens_100k(tmp_path: Path) -> None:
    write_ml100k(tmp_path)
    log = load_movielens_100k(tmp_path)
    assert events(log) == [(1, 10), (1, 20), (1, 30), (2, 10)]
    # first flag set in the file's genre order; no flag: the unknown category
    assert category_of(log) == {10: "Animation", 20: "Action", 30: UNKNOWN_STR}
    profile = {f: log.profile_values[f][log.profile[f]].tolist() for f in log.profile}
    assert profile == {"gender": ["M", "F"], "age": ["24", "53"], "occupation": ["technician", "other"]}
    assert load_movielens_100k(tmp_path, min_rating=4).num_events == 2


@pytest.mark.parametrize(("data", "message"), [
    (b"1\t20\t4\t881250949\n1\t10\t5\n", r"u.data:2: expected 4 fields"),
    (b"1\t20\t4\t881250949\nx\t10\t5\t881250949\n", r"u.data:2: user id: expected a non-negative integer"),
    (b"1\t20\t4\t881250949\n1\t1\xc30\t5\t8\n", r"u.data:2: byte 0xc3 is not ASCII"),
])
def test_movielens_100k_malformed(tmp_path: Path, data: bytes, message: str) -> None:
    write_ml100k(tmp_path, data)
    with pytest.raises(ValueError, match=message):
        load_movielens_100k(tmp_path)


def test_movielens_100k_bad_flags_and_duplicates(tmp_path: Path) -> None:
    write_ml100k(tmp_path)
    (tmp_path / "u.item").write_text(f"10|T|d||u|{flags(1)}\n10|T|d||u|{flags(2)}\n")
    with pytest.raises(ValueError, match=r"u.item:2: movie id 10 is listed twice"):
        load_movielens_100k(tmp_path)
    (tmp_path / "u.item").write_text(f"10|T|d||u|{flags(1).replace('1', '2')}\n")
    with pytest.raises(ValueError, match=r"u.item:1: genre flags: expected 0 or 1"):
        load_movielens_100k(tmp_path)


def write_ml1m(root: Path, ratings: bytes | None = None) -> None:
    root.mkdir(exist_ok=True)
    (root / "ratings.dat").write_bytes(ratings if ratings is not None else
                                       b"1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    (root / "movies.dat").write_bytes(
        b"1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        + b"661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        + "2::Mis\xe9rables (1995)::Adventure|Drama\n".encode("latin-1")
    )
    (root / "users.dat").write_bytes(b"1::F::1::10::48067\n2::M::56::16::70072\n")


def test_movielens_1m(tmp_path: Path) -> None:
    write_ml1m(tmp_path)
    log = load_movielens_1m(tmp_path)
    assert events(log) == [(1, 1193), (1, 661), (2, 1193)]
    assert category_of(log) == {2: "Adventure", 661: "Animation", 1193: "Drama"}  # first listed genre
    profile = {f: log.profile_values[f][log.profile[f]].tolist() for f in log.profile}
    assert profile == {"gender": ["F", "M"], "age": ["1", "56"], "occupation": ["10", "16"]}


@pytest.mark.parametrize(("ratings", "message"), [
    (b"1::1193::5::978300760\n1::661::3\n", r"ratings.dat:2: expected 4 fields"),
    (b"1::1193::5::978300760\n1::66a::3::978302109\n", r"ratings.dat:2: item id: expected a non-negative"),
    (b"1::1193::5::978300760\n1:661::3::978302109\n", r"ratings.dat:2: expected 4 fields"),
    (b"\xff1::1193::5::978300760\n", r"ratings.dat:1: byte 0xff is not ASCII"),
])
def test_movielens_1m_malformed(tmp_path: Path, ratings: bytes, message: str) -> None:
    write_ml1m(tmp_path, ratings)
    with pytest.raises(ValueError, match=message):
        load_movielens_1m(tmp_path)


# ------------------------------------------------------------------------------------------------ RecBole


def write_recbole(root: Path, inter: bytes | None = None) -> Path:
    folder = root / "toy"
    folder.mkdir(exist_ok=True)
    (folder / "toy.inter").write_bytes(inter if inter is not None else (
        b"user_id:token\titem_id:token\trating:float\ttimestamp:float\taction:token\n"
        b"u1\ti2\t4\t978300760.0\tclick\n"
        b"u2\ti1\t3\t978300000\tbuy\n"
        b"u1\ti1\t5\t978300000.5\tclick\n"
        b"u1\ti3\t1\t978300999\tbuy\n"
    ))
    (folder / "toy.item").write_text(
        "item_id:token\ttitle:token_seq\tgenre:token_seq\n"
        "i1\tLes Misérables\tDrama Romance\n"
        "i2\tToy Story\tAnimation Comedy\n"
        "i9\tUnseen\tWestern\n"
    )
    (folder / "toy.user").write_text("user_id:token\tage:token\tgender:token\tzip:float\nu1\t24\tM\t1\nu2\t53\tF\t2\n")
    return folder


def test_recbole(tmp_path: Path) -> None:
    log = load_recbole(write_recbole(tmp_path), behaviour_field="action")
    assert events(log) == [("u1", "i1"), ("u1", "i2"), ("u1", "i3"), ("u2", "i1")]
    assert log.timestamps.tolist() == [978300000.5, 978300760.0, 978300999.0, 978300000.0]
    # genre is token_seq: the first token; i3 is not in .item: unknown; i9 has no events but is kept
    assert category_of(log) == {"i1": "Drama", "i2": "Animation", "i3": UNKNOWN_STR, "i9": "Western"}
    assert [log.behaviour_names[b] for b in log.behaviours.tolist()] == ["click", "click", "buy", "buy"]
    # profile: every token field of .user but the id (zip is a float field)
    assert sorted(log.profile) == ["age", "gender"]
    assert log.profile_values["gender"][log.profile["gender"]].tolist() == ["M", "F"]


def test_recbole_options(tmp_path: Path) -> None:
    folder = write_recbole(tmp_path)
    by_title = load_recbole(folder, category_field="title", time_field=None)
    assert category_of(by_title)["i1"] == "Les"
    assert by_title.timestamps.tolist() == [0, 2, 3, 1]  # file order as time
    with pytest.raises(ValueError, match="no category field"):
        load_recbole(folder, category_field="brand")
    with pytest.raises(ValueError, match="no time field 'ts'"):
        load_recbole(folder, time_field="ts")


@pytest.mark.parametrize(("inter", "message"), [
    (b"user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\t5\nu1\ti2\n", r"toy.inter:3: expected 3 fields"),
    (b"user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\tsoon\n", r"toy.inter:2: timestamp: expected a number"),
    (b"user_id:token\titem_id:token\ttimestamp:float\nu1\ti\xff\t5\n", r"toy.inter:2: not UTF-8 \(bad encoding\)"),
    (b"user_id:token\titem_id:int\ttimestamp:float\nu1\ti1\t5\n", r"toy.inter:1: header field 'item_id:int'"),
    (b"user_id:token\titem_id:token\ttimestamp:float\nu1\t\t5\n", r"toy.inter:2: item_id: empty field"),
])
def test_recbole_malformed(tmp_path: Path, inter: bytes, message: str) -> None:
    folder = write_recbole(tmp_path, inter)
    with pytest.raises(ValueError, match=message):
        load_recbole(folder)


def test_recbole_category_from_inter(tmp_path: Path) -> None:
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "shop.inter").write_text(
        "user_id:token\titem_id:token\tcategory_id:token\ttimestamp:float\n"
        "u1\ti1\tc7\t1\nu1\ti2\tc8\t2\nu2\ti1\tc9\t3\n"
    )
    log = load_recbole(folder)  # no .item: the .inter's category field, an item's first line decides
    assert category_of(log) == {"i1": "c7", "i2": "c8"}
    assert log.profile == {}


def test_taobao_the_one_documented_backend_difference(tmp_path: Path) -> None:
    """spec/data_model.md: pyarrow accepts spaces around a number, the NumPy parser refuses them."""
    path = tmp_path / "spaces.csv"
    path.write_text("1,10,100,pv, 5\n")
    assert read_taobao_columns(path, backend="arrow").timestamps.tolist() == [5]
    with pytest.raises(ValueError, match=r"spaces.csv:1: timestamp: expected an integer, got ' 5'"):
        read_taobao_columns(path, backend="numpy")


@given(st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 10**12), st.integers(0, 99),
                          st.sampled_from(TAOBAO_BEHAVIOURS), st.integers(-10**10, 10**10)), min_size=1, max_size=20),
       st.integers(8, 128))
def test_taobao_backends_parse_what_was_written(rows: list[tuple[int, int, int, str, int]], chunk_bytes: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "random.csv"
        path.write_text("".join(f"{u},{i},{c},{b},{t}\n" for u, i, c, b, t in rows))
        for backend in BACKENDS:
            columns = read_taobao_columns(path, backend=backend, chunk_bytes=chunk_bytes)
            assert columns.users.tolist() == [r[0] for r in rows]
            assert columns.items.tolist() == [r[1] for r in rows]
            assert columns.categories.tolist() == [r[2] for r in rows]
            assert [TAOBAO_BEHAVIOURS[b] for b in columns.behaviours.tolist()] == [r[3] for r in rows]
            assert columns.timestamps.tolist() == [r[4] for r in rows]
