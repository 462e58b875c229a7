"""Shared parts of `vjepa data convert`: annotation readers, the video-file lookup and the all-or-nothing writer.

The converters in vjepa/tools/convert.py read a dataset's annotation files with the helpers here (every error is
a ConvertError naming the file and the line or entry), collect `<video> <label>` rows per split in a ListBuilder,
and hand it to write_lists, which checks everything first and only then writes `{split}.csv`, `classes.txt` and
`missing.txt` (each through a temporary file renamed into place), so bad input leaves the output folder as it was.

Output format: the CSV lists read by vjepa.data.video.read_csv_list (`<path> <integer label>` per line, no header,
split at the last whitespace run) and `classes.txt` with the name of class i on line i + 1. Paths are absolute by
default; with relative=True they are relative to the output folder (read_csv_list resolves them against the CSV's
folder). `missing.txt` lists `<split>\\t<expected video>` per annotated video that was not found; a stale one from an
earlier run is removed when nothing is missing.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vjepa.data.media import VIDEO_EXTENSIONS
from vjepa.fileio import atomic_write_all

SPLIT_WORDS = {
    "train": "train",
    "training": "train",
    "trainlist": "train",
    "val": "val",
    "valid": "val",
    "validate": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
SPLIT_ORDER = ("train", "val", "test")  # order of the splits in results and summaries
UNLABELLED = -1  # label written for label-less rows kept on request
PathLike = str | os.PathLike


class ConvertError(ValueError):
    """Annotation input the converter cannot use; the message names the file and the line or entry."""


def split_from_name(text: str) -> str | None:
    """'train', 'val' or 'test' from a split word (train, validate, validation, ...) inside text, else None."""
    for token in re.split(r"[^a-z]+", text.lower()):
        if token in SPLIT_WORDS:
            return SPLIT_WORDS[token]
    return None


def split_files(files: Sequence[Path], what: str) -> dict[str, Path]:
    """Files keyed by the split word in their name (train, val, test order); two files for one split are an error."""
    found: dict[str, Path] = {}
    for f in files:
        split = split_from_name(f.stem)
        if split is None:
            continue
        if split in found:
            raise ConvertError(f"two {what} files for split {split!r}: {found[split]} and {f}; pass only one")
        found[split] = f
    if not found:
        names = ", ".join(map(str, files))
        raise ConvertError(f"no {what} split file (a name with train, val/validation or test) among: {names}")
    return {s: found[s] for s in SPLIT_ORDER if s in found}


def expand_annotations(paths: Sequence[PathLike]) -> list[Path]:
    """The annotation files given: files as they are, folders replaced by the files under them (recursive, sorted).

    Each file appears once, at its first mention."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file()))
        elif p.is_file():
            files.append(p)
        else:
            raise ConvertError(f"annotation path not found: {p}")
    if not files:
        raise ConvertError(f"no annotation files in {', '.join(map(str, paths))}")
    unique = {f.resolve(): f for f in reversed(files)}  # a file also reached through its folder counts once
    return [f for f in files if unique.get(f.resolve()) is f]


def pick_file(files: Sequence[Path], test: Callable[[str], bool], what: str, *, required: bool = True) -> Path | None:
    """The one file whose name passes test(name); zero (when required) or several matches are ConvertErrors."""
    hits = [f for f in files if test(f.name)]
    if len(hits) > 1:
        raise ConvertError(f"several {what} files: {', '.join(map(str, hits))}; pass only one")
    if not hits and required:
        raise ConvertError(f"no {what} file among the annotations: {', '.join(map(str, files))}")
    return hits[0] if hits else None


def read_json(path: Path, expected: type, shape: str) -> list | dict:
    """Load a JSON file whose top level must be `expected` (list or dict); shape describes it in errors."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ConvertError(f"{path}:{err.lineno}: not valid JSON ({err.msg}, column {err.colno})") from None
    if not isinstance(data, expected):
        raise ConvertError(f"{path}: expected {shape}, got a JSON {type(data).__name__}")
    return data


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line without surrounding whitespace) for each non-blank line; tolerates CRLF and a BOM."""
    with open(path, encoding="utf-8-sig") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if line:
                yield lineno, line


def read_classes(path: PathLike) -> list[str]:
    """Class names from a classes.txt (line i + 1 = class i); blank lines inside and duplicates are errors."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"classes file not found: {path}")
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    names: list[str] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(lines, start=1):
        name = raw.strip()
        if not name:
            raise ConvertError(f"{path}:{lineno}: blank line inside the class list (line i + 1 must name class i)")
        if name in seen:
            raise ConvertError(f"{path}:{lineno}: class {name!r} already on line {seen[name]}")
        seen[name] = lineno
        names.append(name)
    if not names:
        raise ConvertError(f"{path}: no class names")
    return names


class VideoFolder:
    """Looks videos up under a root folder from cached directory listings (one listdir per folder, no stat per video).

    find("a/b.avi") -> absolute path or None. With any_ext=True a file with the same stem and another video
    extension also matches (e.g. SSv2 re-encoded from .webm to .mp4); the exact name is preferred.
    """

    def __init__(self, root: PathLike) -> None:
        self.root = Path(os.path.abspath(root))
        if not self.root.is_dir():
            raise ConvertError(f"video folder not found: {self.root}")
        self._listings: dict[Path, dict[str, list[str]]] = {}  # folder -> stem -> names

    def _listing(self, folder: Path) -> dict[str, list[str]]:
        if folder not in self._listings:
            by_stem: dict[str, list[str]] = {}
            try:
                with os.scandir(folder) as it:
                    for entry in it:
                        if entry.is_file():
                            by_stem.setdefault(os.path.splitext(entry.name)[0], []).append(entry.name)
            except (FileNotFoundError, NotADirectoryError):
                pass
            self._listings[folder] = {stem: sorted(names) for stem, names in by_stem.items()}
        return self._listings[folder]

    def find(self, relative: str, *, any_ext: bool = False) -> str | None:
        path = self.root / relative
        stem, ext = os.path.splitext(path.name)
        names = self._listing(path.parent).get(stem, [])
        if path.name in names:
            return str(path)
        if any_ext:
            for name in names:
                if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS:
                    return str(path.parent / name)
        return None


@dataclass
class ListBuilder:
    """Rows gathered by a converter: per split the found (video, label) rows, the missing videos, label-less rows."""

    rows: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)
    unlabelled: dict[str, int] = field(default_factory=dict)

    def add(self, split: str, video: str | None, label: int, expected: str) -> None:
        """Record one annotated video: found at `video`, or missing (None) where `expected` says where it should be."""
        self.rows.setdefault(split, [])
        if video is None:
            self.missing.setdefault(split, []).append(expected)
        else:
            self.rows[split].append((video, label))

    def add_unlabelled(self, split: str, video: str | None, expected: str, keep: bool) -> None:
        """A row without a label: counted, and written with label -1 when keep is set (else skipped)."""
        self.unlabelled[split] = self.unlabelled.get(split, 0) + 1
        if keep:
            self.add(split, video, UNLABELLED, expected)
        else:
            self.rows.setdefault(split, [])


@dataclass(frozen=True)
class ConvertResult:
    """What a conversion wrote: the CSV list of each split, the classes, the missing videos and label-less rows."""

    out_dir: Path
    csv_paths: dict[str, Path]  # split -> written CSV list
    rows: dict[str, int]  # split -> rows written
    classes: list[str]
    missing: dict[str, list[str]]  # split -> expected video of each missing one
    unlabelled: dict[str, int]  # split -> label-less rows (skipped, or written with label -1 if kept)
    kept_unlabelled: bool

    @property
    def num_missing(self) -> int:
        return sum(len(v) for v in self.missing.values())

    def summary(self) -> str:
        lines = [f"wrote {self.out_dir}:"]
        for split, path in self.csv_paths.items():
            extra = []
            if self.missing.get(split):
                extra.append(f"{len(self.missing[split])} missing videos")
            if self.unlabelled.get(split):
                verb = "written with label -1" if self.kept_unlabelled else "skipped"
                extra.append(f"{self.unlabelled[split]} label-less rows {verb}")
            note = f" ({', '.join(extra)})" if extra else ""
            lines.append(f"  {path.name}: {self.rows[split]} rows{note}")
        lines.append(f"  classes.txt: {len(self.classes)} classes")
        if self.num_missing:
            lines.append(f"  missing.txt: {self.num_missing} annotated videos not found")
        return "\n".join(lines)


def _check_line_safe(text: str, what: str) -> None:
    if not text or text != text.strip() or "\n" in text or "\r" in text:
        raise ConvertError(f"{what} {text!r} cannot be written on one line of a list (empty, edge spaces or newline)")


def write_lists(
    out_dir: PathLike,
    classes: Sequence[str],
    built: ListBuilder,
    *,
    relative: bool = False,
    kept_unlabelled: bool = False,
) -> ConvertResult:
    """Check everything, then write {split}.csv, classes.txt and (if any video is missing) missing.txt into out_dir."""
    out_dir = Path(out_dir)
    classes = list(classes)
    for name in classes:
        _check_line_safe(name, "class name")
    if len(set(classes)) != len(classes):
        dup = sorted({c for c in classes if classes.count(c) > 1})
        raise ConvertError(f"duplicate class names: {dup}")
    total_rows = sum(len(r) for r in built.rows.values())
    missing = [m for ms in built.missing.values() for m in ms]
    if total_rows == 0:
        if missing:
            raise ConvertError(
                f"none of the {len(missing)} annotated videos exists (e.g. {missing[0]}); check --videos"
            )
        raise ConvertError("no rows to write: every annotated row is label-less (pass --keep-unlabelled to keep them)")
    base = out_dir.resolve()
    texts: dict[Path, str] = {}
    for split, rows in built.rows.items():
        lines = []
        for video, label in rows:
            if not (label == UNLABELLED or 0 <= label < len(classes)):
                raise ConvertError(f"label {label} of {video} is outside 0..{len(classes) - 1}")
            path = os.path.relpath(video, base) if relative else os.path.abspath(video)
            _check_line_safe(path, "video path")
            lines.append(f"{path} {label}\n")
        texts[out_dir / f"{split}.csv"] = "".join(lines)
    texts[out_dir / "classes.txt"] = "".join(f"{c}\n" for c in classes)
    if missing:
        texts[out_dir / "missing.txt"] = "".join(f"{s}\t{m}\n" for s, ms in built.missing.items() for m in ms)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_all(texts)
    if not missing and (out_dir / "missing.txt").exists():
        (out_dir / "missing.txt").unlink()  # stale report of an earlier run
    return ConvertResult(
        out_dir=out_dir,
        csv_paths={split: out_dir / f"{split}.csv" for split in built.rows},
        rows={split: len(rows) for split, rows in built.rows.items()},
        classes=classes,
        missing={s: list(ms) for s, ms in built.missing.items() if ms},
        unlabelled=dict(built.unlabelled),
        kept_unlabelled=kept_unlabelled,
    )
