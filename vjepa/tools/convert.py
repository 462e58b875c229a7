"""Turn the annotation files of Kinetics-400/600/700, Something-Something v2, UCF-101, HMDB-51 or Diving-48 into
CSV lists (`<video path> <0-based label>` per line) plus classes.txt, checking that every video exists.

    vjepa data convert kinetics --annotations k400/annotations --videos k400/videos --out lists/k400
    vjepa data convert ssv2 --annotations ssv2/labels --videos ssv2/20bn-something-something-v2 --out lists/ssv2
    vjepa data convert ucf101 --annotations ucfTrainTestlist --videos UCF-101 --out lists/ucf101 --split 1
    vjepa data convert hmdb51 --annotations testTrainMulti_7030_splits --videos hmdb51 --out lists/hmdb --split 1
    vjepa data convert diving48 --annotations Diving48_vocab.json Diving48_V2_train.json Diving48_V2_test.json \\
        --videos Diving48/rgb --out lists/diving48

--annotations takes files or folders (searched recursively); each converter picks its files by name. Output in
--out: `train.csv`, `val.csv` and/or `test.csv`, `classes.txt` (line i + 1 = class i), and `missing.txt`
(`<split>\\t<expected video>`) when annotated videos are not found: those rows are skipped, counted in the
summary, never dropped silently (if no video at all is found, the run fails: --videos is probably wrong). Paths
are absolute unless --relative (then relative to --out). Bad input is a ConvertError naming file and line or
entry, and nothing is written (vjepa/tools/convert_io.py writes through temporary files renamed at the end).

Per dataset (formats as distributed; splits are named train, val, test):
- kinetics: CSVs with header `label,youtube_id,time_start,time_end,split` (extra columns such as K400's `is_cc`
  are ignored; columns are found by name). The split comes from the `split` column, else from the file name.
  Videos are indexed recursively under --videos; a file matches when the first 11 characters of its stem are the
  YouTube id and, if the stem goes on as `_{start}_{end}` (`{id}_{start:06d}_{end:06d}.mp4`), the times match; a
  file named by the id alone matches any row of that id when no timed file does. Classes: the sorted label names
  of the train rows (the usual alphabetical order), or --classes FILE. Rows without a label (test CSVs) are
  skipped and counted, or written with label -1 with --keep-unlabelled.
- ssv2: `something-something-v2-labels.json` ({"class": "index"}) and the train / validation / test JSON lists of
  {"id", "template", ...}; the class is the template without square brackets. Videos `{id}.webm` (another video
  extension with the same stem also matches). Test entries carry no template: label-less as for Kinetics.
- ucf101: `classInd.txt` (1-based) and `trainlist0N.txt` / `testlist0N.txt` of --split N; labels are made 0-based,
  test classes come from the folder name, and a train label that disagrees with its folder is an error. Videos at
  `{videos}/{Class}/{file}.avi`, or directly in --videos.
- hmdb51: `{class}_test_split{N}.txt` files of --split N (lines `video.avi 1|2|0`: train, test, unused); class
  names may hold underscores, so the name is everything before `_test_split`. Classes sorted alphabetically.
  Videos at `{videos}/{class}/{video}`, or directly in --videos.
- diving48: `Diving48_vocab.json` (48 [takeoff, somersault, twist, flight] lists; the class name joins them with
  "_", e.g. `Back_15som_05Twis_FREE`) and `Diving48_V2_train.json` / `_test.json` lists of {"vid_name", "label",
  ...}. Videos `{vid_name}.mp4` (other video extensions with the same stem also match).
Not done: frame ranges (Diving-48 start/end_frame) and Kinetics trimming are not applied; lists point at the files.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vjepa.data.media import VIDEO_EXTENSIONS
from vjepa.tools.convert_io import (
    SPLIT_ORDER,
    ConvertError,
    ConvertResult,
    ListBuilder,
    PathLike,
    VideoFolder,
    expand_annotations,
    pick_file,
    read_classes,
    read_json,
    split_files,
    split_from_name,
    text_lines,
    write_lists,
)

YOUTUBE_ID = re.compile(r"[A-Za-z0-9_-]{11}")
CLIP_TIMES = re.compile(r"_(\d+)_(\d+)")  # what follows the id in `{id}_{start:06d}_{end:06d}`
HMDB_SPLIT_FILE = re.compile(r"(.+)_test_split(\d)\.txt")
DIVING48_SEPARATOR = "_"


def _show(entry: object) -> str:
    text = repr(entry)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_split_number(split: int) -> None:
    if split not in (1, 2, 3):
        raise ConvertError(f"split must be 1, 2 or 3, got {split!r}")


# ---------------------------------------------------------------------------------------------------- Kinetics


@dataclass(frozen=True)
class _KineticsRow:
    path: Path
    lineno: int
    split: str
    label: str  # "" when the row has none
    youtube_id: str
    start: int
    end: int


def _seconds(text: str, path: Path, lineno: int, column: str) -> int:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise ConvertError(f"{path}:{lineno}: {column} {text!r} is not a whole number of seconds")
    return int(value)


def _read_kinetics_csv(path: Path) -> list[_KineticsRow]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [name.strip() for name in next(reader, [])]
        col = {name: i for i, name in enumerate(header)}
        absent = [c for c in ("youtube_id", "time_start", "time_end") if c not in col]
        if absent:
            raise ConvertError(
                f"{path}:1: header {','.join(header)!r} lacks {', '.join(absent)} "
                "(expected label,youtube_id,time_start,time_end,split)"
            )
        file_split = split_from_name(path.stem)
        rows = []
        for fields in reader:
            lineno = reader.line_num
            if not any(x.strip() for x in fields):
                continue
            if len(fields) != len(header):
                raise ConvertError(f"{path}:{lineno}: {len(fields)} fields, the header has {len(header)}")
            value = {name: fields[i].strip() for name, i in col.items()}
            yid = value["youtube_id"]
            if not YOUTUBE_ID.fullmatch(yid):
                raise ConvertError(f"{path}:{lineno}: youtube_id {yid!r} is not 11 characters of [A-Za-z0-9_-]")
            split = split_from_name(value["split"]) if value.get("split") else file_split
            if split is None:
                where = f"split {value['split']!r}" if value.get("split") else "no split column and file name"
                raise ConvertError(f"{path}:{lineno}: cannot tell the split ({where}; expected train, val or test)")
            start = _seconds(value["time_start"], path, lineno, "time_start")
            end = _seconds(value["time_end"], path, lineno, "time_end")
            rows.append(_KineticsRow(path, lineno, split, value.get("label", ""), yid, start, end))
    return rows


def index_kinetics_videos(root: PathLike) -> dict[str, list[tuple[tuple[int, int] | None, str]]]:
    """YouTube id -> [((start, end) or None, path)] for the video files under root (recursive, sorted walk)."""
    index: dict[str, list[tuple[tuple[int, int] | None, str]]] = {}
    for folder, dirs, names in os.walk(os.path.abspath(root)):
        dirs.sort()
        for name in sorted(names):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in VIDEO_EXTENSIONS or not YOUTUBE_ID.fullmatch(stem[:11]):
                continue
            m = CLIP_TIMES.fullmatch(stem[11:])
            times = (int(m[1]), int(m[2])) if m else None
            index.setdefault(stem[:11], []).append((times, os.path.join(folder, name)))
    return index


def _find_kinetics_video(index: dict, yid: str, start: int, end: int) -> str | None:
    candidates = index.get(yid, [])
    timed = [path for times, path in candidates if times == (start, end)]
    untimed = [path for times, path in candidates if times is None]
    return (timed or untimed or [None])[0]


def convert_kinetics(
    annotations: Sequence[PathLike],
    videos: PathLike,
    out: PathLike,
    *,
    classes_file: PathLike | None = None,
    relative: bool = False,
    keep_unlabelled: bool = False,
) -> ConvertResult:
    """Kinetics-400/600/700 CSVs (files or folders of them) -> {split}.csv lists under out."""
    given = expand_annotations(annotations)
    files = [f for f in given if f.suffix.lower() == ".csv"]
    if not files:
        raise ConvertError(f"no .csv file among the annotations: {', '.join(map(str, given))}")
    rows = [row for f in files for row in _read_kinetics_csv(f)]
    if classes_file is not None:
        classes, source = read_classes(classes_file), str(classes_file)
    else:
        classes, source = sorted({r.label for r in rows if r.split == "train" and r.label}), "the train annotations"
        if not classes:
            raise ConvertError("no labelled train rows to take the classes from; pass --classes FILE")
    label_of = {name: i for i, name in enumerate(classes)}
    if not Path(videos).is_dir():
        raise ConvertError(f"video folder not found: {videos}")
    index = index_kinetics_videos(videos)
    root = os.path.abspath(videos)
    built = ListBuilder()
    for split in SPLIT_ORDER:
        for r in (r for r in rows if r.split == split):
            video = _find_kinetics_video(index, r.youtube_id, r.start, r.end)
            expected = os.path.join(root, "**", f"{r.youtube_id}_{r.start:06d}_{r.end:06d}.*")
            if not r.label:
                built.add_unlabelled(split, video, expected, keep_unlabelled)
            elif r.label not in label_of:
                raise ConvertError(
                    f"{r.path}:{r.lineno}: class {r.label!r} is not among the {len(classes)} of {source}"
                )
            else:
                built.add(split, video, label_of[r.label], expected)
    return write_lists(out, classes, built, relative=relative, kept_unlabelled=keep_unlabelled)


# ------------------------------------------------------------------------------------------ Something-Something v2


def _classes_from_index_map(mapping: dict, path: Path) -> list[str]:
    """{"name": "3", ...} -> class names ordered by index; the indices must be exactly 0..n-1."""
    by_index: dict[int, str] = {}
    for name, value in mapping.items():
        if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
            raise ConvertError(f"{path}: entry {name!r}: index {value!r} is not a non-negative integer")
        index = int(value)
        if index in by_index:
            raise ConvertError(f"{path}: entries {by_index[index]!r} and {name!r} share index {index}")
        by_index[index] = name
    if sorted(by_index) != list(range(len(by_index))):
        raise ConvertError(f"{path}: class indices are not 0..{len(by_index) - 1}")
    return [by_index[i] for i in range(len(by_index))]


def convert_ssv2(
    annotations: Sequence[PathLike],
    videos: PathLike,
    out: PathLike,
    *,
    relative: bool = False,
    keep_unlabelled: bool = False,
) -> ConvertResult:
    """Something-Something v2 labels JSON plus train / validation (/ test) JSON lists -> {split}.csv lists."""
    files = [f for f in expand_annotations(annotations) if f.suffix.lower() == ".json"]
    labels_path = pick_file(files, lambda n: "labels" in n.lower(), "SSv2 labels JSON (something-something-v2-labels)")
    labels = read_json(labels_path, dict, 'an object {"class name": "index", ...}')
    classes = _classes_from_index_map(labels, labels_path)
    label_of = {name: i for i, name in enumerate(classes)}
    folder = VideoFolder(videos)
    built = ListBuilder()
    for split, path in split_files([f for f in files if f != labels_path], "SSv2 JSON").items():
        entries = read_json(path, list, 'a list of {"id": ..., "template": ...} objects')
        for i, entry in enumerate(entries):
            vid = entry.get("id") if isinstance(entry, dict) else None
            if isinstance(vid, bool) or not isinstance(vid, (str, int)) or not str(vid):
                raise ConvertError(
                    f"{path}: entry {i}: expected an object with 'id' and 'template', got {_show(entry)}"
                )
            name = f"{vid}.webm"
            video, expected = folder.find(name, any_ext=True), str(folder.root / name)
            template = entry.get("template")
            if template is None:
                built.add_unlabelled(split, video, expected, keep_unlabelled)
                continue
            if not isinstance(template, str):
                raise ConvertError(f"{path}: entry {i} (id {vid}): template {template!r} is not a string")
            class_name = template.replace("[", "").replace("]", "")
            if class_name not in label_of:
                raise ConvertError(
                    f"{path}: entry {i} (id {vid}): class {class_name!r} (from template {template!r}) "
                    f"is not in {labels_path}"
                )
            built.add(split, video, label_of[class_name], expected)
    return write_lists(out, classes, built, relative=relative, kept_unlabelled=keep_unlabelled)


# ------------------------------------------------------------------------------------------------------- UCF-101


def _read_ucf_class_index(path: Path) -> list[str]:
    by_index: dict[int, str] = {}
    for lineno, line in text_lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise ConvertError(f"{path}:{lineno}: expected '<1-based index> <ClassName>', got {line!r}")
        by_index[int(parts[0])] = parts[1]
    if sorted(by_index) != list(range(1, len(by_index) + 1)):
        raise ConvertError(f"{path}: class indices are not 1..{len(by_index)}")
    return [by_index[i] for i in range(1, len(by_index) + 1)]


def convert_ucf101(
    annotations: Sequence[PathLike], videos: PathLike, out: PathLike, *, split: int = 1, relative: bool = False
) -> ConvertResult:
    """UCF-101 classInd.txt plus trainlist0N.txt / testlist0N.txt of split N -> train.csv, test.csv, 0-based labels."""
    _check_split_number(split)
    files = expand_annotations(annotations)
    class_ind = pick_file(files, lambda n: n.lower() == "classind.txt", "UCF-101 classInd.txt")
    classes = _read_ucf_class_index(class_ind)
    by_folder = {name.lower(): i for i, name in enumerate(classes)}
    lists = {
        s: pick_file(
            files, lambda n, s=s: n.lower() == f"{s}list0{split}.txt", f"UCF-101 {s}list0{split}.txt", required=False
        )
        for s in ("train", "test")
    }
    if not any(lists.values()):
        raise ConvertError(f"neither trainlist0{split}.txt nor testlist0{split}.txt among the annotations")
    folder = VideoFolder(videos)
    built = ListBuilder()
    for s, path in lists.items():
        if path is None:
            continue
        for lineno, line in text_lines(path):
            parts = line.split()
            if not 1 <= len(parts) <= 2 or "/" not in parts[0] or (len(parts) == 2 and not parts[1].isdigit()):
                raise ConvertError(f"{path}:{lineno}: expected '<Class>/<video>.avi [1-based label]', got {line!r}")
            rel = parts[0]
            class_dir = rel.split("/")[0]
            if class_dir.lower() not in by_folder:
                raise ConvertError(f"{path}:{lineno}: class folder {class_dir!r} is not in {class_ind}")
            label = by_folder[class_dir.lower()]
            if len(parts) == 2 and int(parts[1]) != label + 1:
                raise ConvertError(
                    f"{path}:{lineno}: label {parts[1]} is not {label + 1}, the index of folder {class_dir!r} "
                    f"in {class_ind}"
                )
            video = folder.find(rel) or folder.find(os.path.basename(rel))
            built.add(s, video, label, str(folder.root / rel))
    return write_lists(out, classes, built, relative=relative)


# ------------------------------------------------------------------------------------------------------- HMDB-51


def convert_hmdb51(
    annotations: Sequence[PathLike], videos: PathLike, out: PathLike, *, split: int = 1, relative: bool = False
) -> ConvertResult:
    """HMDB-51 `{class}_test_split{N}.txt` files of split N -> train.csv (flag 1), test.csv (flag 2); 0 is unused."""
    _check_split_number(split)
    split_of_class: dict[str, Path] = {}
    files = expand_annotations(annotations)
    for f in files:
        m = HMDB_SPLIT_FILE.fullmatch(f.name)
        if m and int(m[2]) == split:
            if m[1] in split_of_class:
                raise ConvertError(f"two split files for class {m[1]!r}: {split_of_class[m[1]]} and {f}")
            split_of_class[m[1]] = f
    if not split_of_class:
        raise ConvertError(f"no '<class>_test_split{split}.txt' file among: {', '.join(map(str, files))}")
    classes = sorted(split_of_class)
    folder = VideoFolder(videos)
    built = ListBuilder(rows={"train": [], "test": []})
    for label, name in enumerate(classes):
        path = split_of_class[name]
        for lineno, line in text_lines(path):
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise ConvertError(f"{path}:{lineno}: expected '<video>.avi <0|1|2>', got {line!r}")
            if parts[1] == "0":
                continue
            rel = f"{name}/{parts[0]}"
            video = folder.find(rel) or folder.find(parts[0])
            built.add("train" if parts[1] == "1" else "test", video, label, str(folder.root / rel))
    return write_lists(out, classes, built, relative=relative)


# ---------------------------------------------------------------------------------------------------- Diving-48


def convert_diving48(
    annotations: Sequence[PathLike], videos: PathLike, out: PathLike, *, relative: bool = False
) -> ConvertResult:
    """Diving-48 vocab JSON plus train / test JSON lists (V2 or V1) -> train.csv, test.csv."""
    files = [f for f in expand_annotations(annotations) if f.suffix.lower() == ".json"]
    vocab_path = pick_file(files, lambda n: "vocab" in n.lower(), "Diving-48 vocab JSON (Diving48_vocab.json)")
    vocab = read_json(vocab_path, list, "a list of [takeoff, somersault, twist, flight] lists")
    classes = []
    for i, parts in enumerate(vocab):
        if not isinstance(parts, list) or not parts or not all(isinstance(p, str) and p for p in parts):
            raise ConvertError(f"{vocab_path}: entry {i}: expected a list of non-empty strings, got {_show(parts)}")
        classes.append(DIVING48_SEPARATOR.join(parts))
    folder = VideoFolder(videos)
    built = ListBuilder()
    for split, path in split_files([f for f in files if f != vocab_path], "Diving-48 JSON").items():
        entries = read_json(path, list, 'a list of {"vid_name": ..., "label": ...} objects')
        for i, entry in enumerate(entries):
            vid = entry.get("vid_name") if isinstance(entry, dict) else None
            label = entry.get("label") if isinstance(entry, dict) else None
            if not isinstance(vid, str) or not vid or isinstance(label, bool) or not isinstance(label, int):
                raise ConvertError(
                    f"{path}: entry {i}: expected an object with 'vid_name' and 'label', got {_show(entry)}"
                )
            if not 0 <= label < len(classes):
                raise ConvertError(f"{path}: entry {i} ({vid}): label {label} is outside 0..{len(classes) - 1}")
            name = f"{vid}.mp4"
            built.add(split, folder.find(name, any_ext=True), label, str(folder.root / name))
    return write_lists(out, classes, built, relative=relative)


# --------------------------------------------------------------------------------------------------------- CLI

CONVERTERS: dict[str, Callable[..., ConvertResult]] = {
    "kinetics": convert_kinetics,
    "ssv2": convert_ssv2,
    "ucf101": convert_ucf101,
    "hmdb51": convert_hmdb51,
    "diving48": convert_diving48,
}
# option (argparse dest) -> (keyword of the converter, datasets it applies to)
DATASET_OPTIONS = {
    "split": ("split", ("ucf101", "hmdb51")),
    "classes": ("classes_file", ("kinetics",)),
    "keep_unlabelled": ("keep_unlabelled", ("kinetics", "ssv2")),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `vjepa data convert`."""
    parser.add_argument("dataset", choices=list(CONVERTERS), help="dataset whose annotation format is read")
    parser.add_argument(
        "--annotations", nargs="+", required=True, metavar="PATH", help="annotation files or folders holding them"
    )
    parser.add_argument("--videos", required=True, metavar="ROOT", help="folder holding the video files")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder for {split}.csv and classes.txt")
    parser.add_argument(
        "--split", type=int, choices=(1, 2, 3), help="official split number (ucf101, hmdb51; default 1)"
    )
    parser.add_argument("--classes", metavar="FILE", help="class list to use, one name per line (kinetics)")
    parser.add_argument(
        "--keep-unlabelled", action="store_true", help="write label-less rows with label -1 (kinetics, ssv2)"
    )
    parser.add_argument("--relative", action="store_true", help="write paths relative to --out (default absolute)")


def run(args: argparse.Namespace) -> int:
    """Convert, print a summary; exit code 2 on bad input or an option the dataset does not take."""
    options = {}
    for dest, (keyword, datasets) in DATASET_OPTIONS.items():
        value = getattr(args, dest)
        if value is None or value is False:
            continue
        if args.dataset not in datasets:
            flag = "--" + dest.replace("_", "-")
            print(f"convert error: {flag} applies to {', '.join(datasets)} only, not {args.dataset}", file=sys.stderr)
            return 2
        options[keyword] = value
    try:
        result = CONVERTERS[args.dataset](args.annotations, args.videos, args.out, relative=args.relative, **options)
    except ConvertError as err:
        print(f"convert error: {err}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0
