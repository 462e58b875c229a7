"""`vjepa data convert`: small annotation files in each dataset's real format -> exact, hand-written CSV lists.

Every dataset runs through its Python function and through `vjepa.cli.main`; videos are empty placeholder files
(the converter only checks that they exist). Also: missing videos reported, malformed input named by file:line or
entry with nothing written, --relative output, and read_csv_list reading the lists back.
"""

import json
from pathlib import Path

import pytest

from vjepa.cli import main
from vjepa.data.video import read_csv_list
from vjepa.tools import convert as conv
from vjepa.tools.convert_io import ConvertError

K_CLASSES = ["abseiling", "air drumming", "passing American football (in game)"]


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="")
    return path


def _json(path: Path, data) -> Path:
    return _write(path, json.dumps(data, indent=1))


# Each builder writes annotations + videos under tmp and returns (dataset, annotation paths, video root, options,
# expected output files with {V} standing for the video root).


def _kinetics(tmp: Path):
    ann = tmp / "kinetics400"
    _write(
        ann / "train.csv",
        "label,youtube_id,time_start,time_end,split,is_cc\n"
        "abseiling,---QUuC4vJs,3,13,train,0\n"
        "air drumming,--nQbRBEz2s,104,114,train,0\n"
        '"passing American football (in game)",-0NmyhNuVwA,10,20,train,0\n'
        "abseiling,0347ZoDXyP0,59,69,train,0\n",
    )
    _write(
        ann / "validate.csv", "label,youtube_id,time_start,time_end,split,is_cc\nair drumming,a_b-c_d-e_f,1,11,val,0\n"
    )
    _write(ann / "test.csv", "youtube_id,time_start,time_end,split\nzzzzzzzzzzz,0,10,test\n")  # K600 style: no label
    vids = tmp / "k400 videos"  # a space in the path
    _touch(
        vids,
        "abseiling/---QUuC4vJs_000003_000013.mp4",  # per-class folder
        "--nQbRBEz2s_000104_000114.webm",
        "-0NmyhNuVwA_000005_000008.mp4",  # same id, other times (sorted first): must not match
        "-0NmyhNuVwA_000010_000020.mp4",
        "a_b-c_d-e_f.mp4",  # named by the id alone
        "0347ZoDXyP0_000059_000069.mp4.part",  # unfinished download: not a video
        "zzzzzzzzzzz_000000_000010.mp4",
    )
    expected = {
        "train.csv": "{V}/abseiling/---QUuC4vJs_000003_000013.mp4 0\n"
        "{V}/--nQbRBEz2s_000104_000114.webm 1\n"
        "{V}/-0NmyhNuVwA_000010_000020.mp4 2\n",
        "val.csv": "{V}/a_b-c_d-e_f.mp4 1\n",
        "test.csv": "",
        "classes.txt": "abseiling\nair drumming\npassing American football (in game)\n",
        "missing.txt": "train\t{V}/**/0347ZoDXyP0_000059_000069.*\n",
    }
    return "kinetics", [ann], vids, {}, expected


def _ssv2(tmp: Path):
    ann = tmp / "labels"
    labels = {
        "Putting something on a surface": "2",
        "Approaching something with your camera": "0",
        "Holding something next to something": "1",
    }
    _json(ann / "something-something-v2-labels.json", labels)
    potato = {
        "id": "78687",
        "label": "holding potato next to vicks vaporub bottle",
        "template": "Holding [something] next to [something]",
        "placeholders": ["potato", "vicks vaporub bottle"],
    }
    cup = {"id": "42326", "label": "putting cup on a table", "template": "Putting [something] on a surface"}
    gone = {"id": "100", "label": "putting pen on floor", "template": "Putting [something] on a surface"}
    _json(ann / "something-something-v2-train.json", [potato, cup, gone])
    cam = {"id": "1", "label": "approaching door", "template": "Approaching [something] with your camera"}
    _json(ann / "something-something-v2-validation.json", [cam])
    _json(ann / "something-something-v2-test.json", [{"id": "555"}])
    vids = tmp / "20bn-something-something-v2"
    _touch(vids, "78687.webm", "42326.webm", "1.mp4", "555.webm")  # 1.mp4: re-encoded, same stem
    expected = {
        "train.csv": "{V}/78687.webm 1\n{V}/42326.webm 2\n",
        "val.csv": "{V}/1.mp4 0\n",
        "test.csv": "{V}/555.webm -1\n",
        "classes.txt": "Approaching something with your camera\nHolding something next to something\n"
        "Putting something on a surface\n",
        "missing.txt": "train\t{V}/100.webm\n",
    }
    return "ssv2", [ann / "something-something-v2-labels.json", ann], vids, {"keep_unlabelled": True}, expected


def _ucf101(tmp: Path):
    ann = tmp / "ucfTrainTestlist"
    _write(ann / "classInd.txt", "1 ApplyEyeMakeup\r\n2 BandMarching\r\n3 HandstandPushups\r\n")  # CRLF as shipped
    _write(
        ann / "trainlist01.txt",
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n"
        "HandstandPushups/v_HandStandPushups_g08_c01.avi 3\r\n"
        "BandMarching/v_BandMarching_g09_c01.avi 2\r\n",
    )
    _write(
        ann / "testlist01.txt",
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\r\nBandMarching/v_BandMarching_g01_c01.avi\r\n",
    )
    _write(ann / "trainlist02.txt", "BandMarching/v_BandMarching_g01_c01.avi 2\r\n")
    _write(ann / "testlist02.txt", "HandstandPushups/v_HandStandPushups_g08_c01.avi\r\n")
    vids = tmp / "UCF-101"
    _touch(
        vids,
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi",
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
        "HandstandPushups/v_HandStandPushups_g08_c01.avi",
        "BandMarching/v_BandMarching_g01_c01.avi",
    )
    expected = {
        "train.csv": "{V}/BandMarching/v_BandMarching_g01_c01.avi 1\n",
        "test.csv": "{V}/HandstandPushups/v_HandStandPushups_g08_c01.avi 2\n",
        "classes.txt": "ApplyEyeMakeup\nBandMarching\nHandstandPushups\n",
    }
    return "ucf101", [ann], vids, {"split": 2}, expected


UCF_SPLIT1 = {
    "train.csv": "{V}/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 0\n"
    "{V}/HandstandPushups/v_HandStandPushups_g08_c01.avi 2\n",
    "test.csv": "{V}/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 0\n{V}/BandMarching/v_BandMarching_g01_c01.avi 1\n",
    "missing.txt": "train\t{V}/BandMarching/v_BandMarching_g09_c01.avi\n",
}


def _hmdb51(tmp: Path):
    ann = tmp / "testTrainMulti_7030_splits"
    _write(
        ann / "shoot_ball_test_split1.txt",
        "Basketball_Shot_shoot_ball_f_cm_np1_ba_med_0.avi 1 \nLebron_shoot_ball_u_cm_np1_fr_med_2.avi 2 \n",
    )
    _write(
        ann / "brush_hair_test_split1.txt", "April_09_brush_hair_u_nm_np1_ba_goo_0.avi 2 \nBlonde_brush_hair_0.avi 0 \n"
    )
    _write(ann / "clap_test_split1.txt", "Clap_#1_clap_f_nm_np1_fr_med_0.avi 1 \nclap_missing_0.avi 1 \n")
    _write(ann / "clap_test_split2.txt", "Clap_#1_clap_f_nm_np1_fr_med_0.avi 2 \n")
    vids = tmp / "hmdb51"
    _touch(
        vids,
        "shoot_ball/Basketball_Shot_shoot_ball_f_cm_np1_ba_med_0.avi",
        "shoot_ball/Lebron_shoot_ball_u_cm_np1_fr_med_2.avi",
        "brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi",
        "brush_hair/Blonde_brush_hair_0.avi",
        "clap/Clap_#1_clap_f_nm_np1_fr_med_0.avi",
    )
    expected = {
        "train.csv": "{V}/clap/Clap_#1_clap_f_nm_np1_fr_med_0.avi 1\n"
        "{V}/shoot_ball/Basketball_Shot_shoot_ball_f_cm_np1_ba_med_0.avi 2\n",
        "test.csv": "{V}/brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi 0\n"
        "{V}/shoot_ball/Lebron_shoot_ball_u_cm_np1_fr_med_2.avi 2\n",
        "classes.txt": "brush_hair\nclap\nshoot_ball\n",
        "missing.txt": "train\t{V}/clap/clap_missing_0.avi\n",
    }
    files = [ann / f"{name}_test_split{n}.txt" for name, n in [("shoot_ball", 1), ("clap", 2), ("brush_hair", 1)]]
    return "hmdb51", [*files, ann / "clap_test_split1.txt"], vids, {"split": 1}, expected  # classes get sorted


def _diving48(tmp: Path):
    vocab = [
        ["Back", "15som", "05Twis", "FREE"],
        ["Forward", "25som", "NoTwis", "PIKE"],
        ["Inward", "35som", "NoTwis", "TUCK"],
    ]
    v = _json(tmp / "Diving48_vocab.json", vocab)
    train = [
        {"vid_name": "-mmq0PT-u8k_00155", "label": 0, "start_frame": 0, "end_frame": 184},
        {"vid_name": "-mmq0PT-u8k_00156", "label": 2, "start_frame": 0, "end_frame": 64},
    ]
    tr = _json(tmp / "Diving48_V2_train.json", train)
    te = _json(
        tmp / "Diving48_V2_test.json",
        [{"vid_name": "zR725veL-DI_00000", "label": 1, "start_frame": 0, "end_frame": 90}],
    )
    vids = tmp / "rgb"
    _touch(vids, "-mmq0PT-u8k_00155.mp4", "-mmq0PT-u8k_00156.mp4", "zR725veL-DI_00000.mp4")
    expected = {
        "train.csv": "{V}/-mmq0PT-u8k_00155.mp4 0\n{V}/-mmq0PT-u8k_00156.mp4 2\n",
        "test.csv": "{V}/zR725veL-DI_00000.mp4 1\n",
        "classes.txt": "Back_15som_05Twis_FREE\nForward_25som_NoTwis_PIKE\nInward_35som_NoTwis_TUCK\n",
    }
    return "diving48", [v, tr, te], vids, {}, expected


BUILDERS = [_kinetics, _ssv2, _ucf101, _hmdb51, _diving48]
FLAGS = {"split": "--split", "keep_unlabelled": "--keep-unlabelled", "classes_file": "--classes"}


def _cli(dataset, annotations, videos, out, options, *extra) -> int:
    argv = ["data", "convert", dataset, "--annotations", *map(str, annotations), "--videos", str(videos)]
    argv += ["--out", str(out), *extra]
    for key, value in options.items():
        argv += [FLAGS[key]] if value is True else [FLAGS[key], str(value)]
    return main(argv)


def _assert_output(out: Path, expected: dict, videos: Path) -> None:
    want = {name: text.replace("{V}", str(videos)) for name, text in expected.items()}
    got = {p.name: p.read_text(encoding="utf-8") for p in out.iterdir()}
    assert got == want


@pytest.mark.parametrize("via", ["python", "cli"])
@pytest.mark.parametrize("build", BUILDERS, ids=lambda b: b.__name__[1:])
def test_convert_writes_expected_lists(tmp_path, build, via, capsys):
    dataset, annotations, videos, options, expected = build(tmp_path)
    out = tmp_path / "out"
    if via == "python":
        result = conv.CONVERTERS[dataset](annotations, videos, out, **options)
        assert result.classes == expected["classes.txt"].splitlines()
        assert result.rows == {s[:-4]: t.count("\n") for s, t in expected.items() if s.endswith(".csv")}
        assert result.num_missing == expected.get("missing.txt", "").count("\n")
    else:
        assert _cli(dataset, annotations, videos, out, options) == 0
        summary = capsys.readouterr().out
        assert "classes.txt: 3 classes" in summary
        assert ("missing.txt: 1 annotated videos not found" in summary) == ("missing.txt" in expected)
    _assert_output(out, expected, videos)
    for name, text in expected.items():  # the lists read back to the same (absolute path, label) rows
        if name.endswith(".csv"):
            rows = [line.replace("{V}", str(videos)).rsplit(" ", 1) for line in text.splitlines()]
            assert [(p, lab) for p, lab, _ in read_csv_list(out / name)] == [(p, int(lab)) for p, lab in rows]


def test_ucf101_split1_and_rerun_removes_stale_missing_report(tmp_path):
    dataset, annotations, videos, _, expected = _ucf101(tmp_path)
    out = tmp_path / "out"
    conv.convert_ucf101(annotations, videos, out, split=1)
    _assert_output(out, {**UCF_SPLIT1, "classes.txt": expected["classes.txt"]}, videos)
    conv.convert_ucf101(annotations, videos, out, split=2)  # nothing missing now: missing.txt goes
    _assert_output(out, expected, videos)


def test_kinetics_label_less_rows_and_classes_file(tmp_path, capsys):
    dataset, annotations, videos, _, expected = _kinetics(tmp_path)
    out = tmp_path / "out"
    result = conv.convert_kinetics(annotations, videos, out)
    assert result.unlabelled == {"test": 1} and result.rows["test"] == 0
    classes = _write(
        tmp_path / "my_classes.txt", "zumba\npassing American football (in game)\nair drumming\nabseiling\n"
    )
    rc = _cli(dataset, annotations, videos, out, {"classes_file": classes, "keep_unlabelled": True})
    assert rc == 0
    summary = capsys.readouterr().out
    assert "test.csv: 1 rows (1 label-less rows written with label -1)" in summary
    assert "train.csv: 3 rows (1 missing videos)" in summary
    want = {
        **expected,
        "train.csv": "{V}/abseiling/---QUuC4vJs_000003_000013.mp4 3\n"
        "{V}/--nQbRBEz2s_000104_000114.webm 2\n"
        "{V}/-0NmyhNuVwA_000010_000020.mp4 1\n",
        "val.csv": "{V}/a_b-c_d-e_f.mp4 2\n",
        "test.csv": "{V}/zzzzzzzzzzz_000000_000010.mp4 -1\n",
        "classes.txt": "zumba\npassing American football (in game)\nair drumming\nabseiling\n",
    }
    _assert_output(out, want, videos)


def test_relative_paths_resolve_against_the_list_folder(tmp_path):
    _, annotations, videos, _, _ = _hmdb51(tmp_path)
    out = tmp_path / "lists" / "hmdb"
    assert _cli("hmdb51", annotations, videos, out, {}, "--relative") == 0
    assert (out / "test.csv").read_text() == (
        "../../hmdb51/brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi 0\n"
        "../../hmdb51/shoot_ball/Lebron_shoot_ball_u_cm_np1_fr_med_2.avi 2\n"
    )
    for path, _, _ in read_csv_list(out / "train.csv") + read_csv_list(out / "test.csv"):
        assert Path(path).is_file()


def _bad_kinetics(tmp: Path, text: str) -> list[Path]:
    return [_write(tmp / "ann" / "train.csv", "label,youtube_id,time_start,time_end,split\n" + text)]


@pytest.mark.parametrize(
    "rows, message",
    [
        ("abseiling,---QUuC4vJs,3,13,train\nabseiling,--nQbRBEz2s,3,train\n", "train.csv:3: 4 fields"),
        ("abseiling,short_id,3,13,train\n", "train.csv:2: youtube_id 'short_id'"),
        ("abseiling,---QUuC4vJs,3.5,13,train\n", "train.csv:2: time_start '3.5'"),
        ("abseiling,---QUuC4vJs,3,13,holdout\n", "train.csv:2: cannot tell the split"),
        ("abseiling,---QUuC4vJs,3,13,train\nzumba,--nQbRBEz2s,3,13,val\n", "train.csv:3: class 'zumba' is not among"),
    ],
)
def test_kinetics_malformed_rows_name_file_and_line(tmp_path, rows, message):
    with pytest.raises(ConvertError, match=message):
        conv.convert_kinetics(_bad_kinetics(tmp_path, rows), tmp_path, tmp_path / "out")


def test_malformed_text_lines_name_file_and_line(tmp_path):
    _, annotations, videos, _, _ = _ucf101(tmp_path)
    _write(
        annotations[0] / "trainlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nBandMarching/v_x.avi two\n"
    )
    with pytest.raises(ConvertError, match=r"trainlist01.txt:2: expected '<Class>/<video>.avi"):
        conv.convert_ucf101(annotations, videos, tmp_path / "out", split=1)
    _write(annotations[0] / "trainlist01.txt", "BandMarching/v_BandMarching_g09_c01.avi 1\n")
    with pytest.raises(ConvertError, match=r"trainlist01.txt:1: label 1 is not 2"):
        conv.convert_ucf101(annotations, videos, tmp_path / "out", split=1)
    _, annotations, videos, _, _ = _hmdb51(tmp_path / "h")
    _write(annotations[0].parent / "clap_test_split1.txt", "a.avi 1\n\nb.avi 3\n")
    with pytest.raises(ConvertError, match=r"clap_test_split1.txt:3: expected '<video>.avi <0\|1\|2>'"):
        conv.convert_hmdb51(annotations, videos, tmp_path / "out", split=1)


def test_json_of_the_wrong_shape_names_file_and_entry(tmp_path):
    _, annotations, videos, _, _ = _ssv2(tmp_path)
    train = tmp_path / "labels" / "something-something-v2-train.json"
    for content, message in [
        ('{"id": "1"}', "train.json: expected a list of"),
        ('[{"id": "1", "template": "x"', "train.json:1: not valid JSON"),
        (
            '[{"id": "78687", "template": "Holding [something] next to [something]"}, {"template": "x"}]',
            "train.json: entry 1: expected an",
        ),
        ('[{"id": "78687", "template": "Dropping [something]"}]', r"entry 0 \(id 78687\): class 'Dropping something'"),
    ]:
        _write(train, content)
        with pytest.raises(ConvertError, match=message):
            conv.convert_ssv2(annotations, videos, tmp_path / "out")
    _json(tmp_path / "labels" / "something-something-v2-labels.json", {"a": "0", "b": "2"})
    with pytest.raises(ConvertError, match=r"labels.json: class indices are not 0..1"):
        conv.convert_ssv2(annotations, videos, tmp_path / "out")
    _, annotations, videos, _, _ = _diving48(tmp_path / "d")
    _json(annotations[2], [{"vid_name": "a", "label": 3}])
    with pytest.raises(ConvertError, match=r"Diving48_V2_test.json: entry 0 \(a\): label 3 is outside 0..2"):
        conv.convert_diving48(annotations, videos, tmp_path / "out")


def test_bad_input_writes_nothing_and_cli_exits_2(tmp_path, capsys):
    _, annotations, videos, _, _ = _diving48(tmp_path)
    out = tmp_path / "out"
    _write(out / "train.csv", "old content\n")
    _json(annotations[1], [{"vid_name": "-mmq0PT-u8k_00155", "label": 0}, {"vid_name": "x", "label": "0"}])
    assert _cli("diving48", annotations, videos, out, {}) == 2
    assert "Diving48_V2_train.json: entry 1: expected an object with 'vid_name' and 'label'" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["train.csv"] and (out / "train.csv").read_text() == "old content\n"
    assert _cli("diving48", annotations, videos, out, {"split": 1}) == 2  # an option the dataset does not take
    assert "--split applies to ucf101, hmdb51 only" in capsys.readouterr().err


def test_no_video_found_is_an_error(tmp_path):
    _, annotations, _, _, _ = _ucf101(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConvertError, match="none of the 5 annotated videos exists.*check --videos"):
        conv.convert_ucf101(annotations, tmp_path / "empty", tmp_path / "out", split=1)
    assert not (tmp_path / "out").exists()


def test_failed_write_leaves_old_files_and_no_temporaries(tmp_path, monkeypatch):
    _, annotations, videos, _, _ = _diving48(tmp_path)
    out = tmp_path / "out"
    _write(out / "train.csv", "old content\n")
    real_write_text, calls = Path.write_text, []

    def write_text_failing_second_time(self, *args, **kwargs):
        calls.append(self)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text_failing_second_time)
    with pytest.raises(OSError, match="disk full"):
        conv.convert_diving48(annotations, videos, out)
    monkeypatch.undo()
    assert len(calls) == 2 and calls[0].parent == out
    assert [p.name for p in out.iterdir()] == ["train.csv"] and (out / "train.csv").read_text() == "old content\n"
