"""Files in and out: CSV tables read with one-line errors, image paths checked to exist, and
atomic writes (an artifact is either complete or absent, never half-written)."""

from __future__ import annotations

import os
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import PipelineError

# ----------------------------------------------------------------------------- reading


def read_table(path: str | Path, columns: list[str], id_col: str | None = None) -> pd.DataFrame:
    """A CSV as strings, with the named columns present, non-empty, and (id_col) unique."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise PipelineError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None
    return check_table(df, path, columns, id_col)


def check_table(df: pd.DataFrame, path: str | Path, columns: list[str], id_col: str | None = None) -> pd.DataFrame:
    """read_table's checks on a table already read: the named columns present and non-empty,
    id_col unique, at least one row."""
    for col in columns:
        if col not in df.columns:
            raise PipelineError(f"{path}: no column '{col}' (columns: {', '.join(df.columns)})")
        empty = np.flatnonzero(df[col].str.strip() == "")
        if len(empty):
            raise PipelineError(f"{path}: line {empty[0] + 2}: empty '{col}'")
    if id_col is not None:
        dup = np.flatnonzero(df[id_col].duplicated())
        if len(dup):
            raise PipelineError(f"{path}: line {dup[0] + 2}: duplicate {id_col} '{df[id_col].iloc[dup[0]]}'")
    if df.empty:
        raise PipelineError(f"{path}: no rows")
    return df


def image_paths(root: str | Path, pattern: str, ids, table: str | Path, lines=None) -> list[Path]:
    """Paths of the images named by `pattern` ({id} replaced), each checked to exist. `lines`: each
    id's line in `table`; by default the ids are the table's rows in order (line = position + 2), so
    a caller passing some of its rows passes their lines too (a DataFrame's `index + 2`)."""
    paths = [Path(root) / pattern.format(id=i) for i in ids]
    for line, p in zip(range(2, len(paths) + 2) if lines is None else lines, paths):
        if not p.is_file():
            raise PipelineError(f"{p}: image not found ({table} line {line})")
    return paths


def damaged(path: Path) -> bool:
    """Whether an artifact exists but cannot be what its stage wrote: a checkpoint whose zip
    directory is unreadable, a CSV that does not end its last line (every writer here does) or
    does not parse. Cheap enough for every make (make_bridge); a missing file is Make's own
    business."""
    if not path.is_file():
        return False
    if path.suffix == ".pt":
        try:
            with zipfile.ZipFile(path) as z:
                return not any(n.endswith("/data.pkl") for n in z.namelist())
        except (zipfile.BadZipFile, OSError):
            return True
    try:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                return True
        pd.read_csv(path, dtype=str, keep_default_na=False, nrows=5)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError):
        return True
    return False


# ----------------------------------------------------------------------------- writing


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temp path beside `path`; on success it replaces `path`, on error it is removed. The
    file gets the permissions the umask gives a new file (mkstemp's temp file is private, 0600,
    which would hide a submission from other users and containers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's umask, read from /proc where it can be (os.umask can only read it by setting
    it, for a moment, for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_text_if_changed(path: str | Path, text: str) -> bool:
    path = Path(path)
    if path.exists() and path.read_text() == text:
        return False
    write_text(path, text)
    return True


def write_csv(path: str | Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
