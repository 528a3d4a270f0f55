"""Atomic file and directory writes: a killed process leaves the old version or the new one,
never half of one (design.md: "files are written to a temp name and renamed")."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def umask() -> int:
    """The process's umask (reading it means setting it: set it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_dir(prefix: str, parent: Path, suffix: str = "") -> Path:
    """tempfile.mkdtemp beside the final folder, with the mode a plain mkdir would give it:
    mkdtemp makes it 0700, and the rename kept that, so a world, tokenizer or model folder was
    unreadable to the other users of a shared lab (the folders it replaces were 0755)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    tmp.chmod(0o777 & ~umask())
    return tmp


@contextmanager
def atomic_dir(out_dir: str | os.PathLike, merge: bool = False) -> Iterator[Path]:
    """Yield a temp dir beside `out_dir`; on success it replaces `out_dir` (or, with `merge`,
    its files replace the same-named files of an existing `out_dir`). On error it is removed."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(f".{out.name}.tmp", out.parent)
    try:
        yield tmp
        if out.exists() and merge:
            for f in tmp.iterdir():
                os.replace(f, out / f.name)
            shutil.rmtree(tmp)
        elif out.exists():
            old = out.with_name(f".{out.name}.old{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
