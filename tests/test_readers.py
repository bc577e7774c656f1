"""The benchmark and label readers of emotion_llama.data.formats on files written as the
datasets release them, and on malformed variants: every error names the file and the line."""

import re
from pathlib import Path

import pytest

from emotion_llama.data.formats.lists import (
    DFEW_LABELS,
    read_classification_folder,
    read_dfew_split,
    read_label_csv,
    read_ncev,
    read_subtitles,
)
from emotion_llama.data.formats.references import read_references
from emotion_llama.data.samples import DataError
from emotion_llama.errors import EmotionLlamaError


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))  # bytes: the line endings stay as given
    return path


def _raises_at(path: Path, line: int, problem: str):
    """pytest.raises for a DataError whose message starts ``path:line:`` and mentions ``problem``."""
    return pytest.raises(DataError, match=rf"^{re.escape(str(path))}:{line}: .*{problem}")


# -- NCEV label lists ---------------------------------------------------------------------------------
NCEV = (
    "sample_00000001 90 happy 0.0\n"
    "sample_00000047 22 surprise -0.61232674\n"
    "samplenew_00006611 150 worried -10\n"  # MER2023's "no valence" placeholder
    "sample_00000088 64 neutral\n"  # valence may be missing
)


def test_ncev_as_released(tmp_path):
    clips = read_ncev(_write(tmp_path / "MER2023_NCEV.txt", NCEV))
    assert [(c.name, c.label, c.valence) for c in clips] == [
        ("sample_00000001", "happy", 0.0),
        ("sample_00000047", "surprise", -0.61232674),
        ("samplenew_00006611", "worried", None),
        ("sample_00000088", "neutral", None),
    ]
    dfew = read_ncev(_write(tmp_path / "dfew.txt", "00001 40 3 0\n00002 37 fear 0\n"), DFEW_LABELS)
    assert [c.label for c in dfew] == ["neutral", "fear"]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("sample_00000002 happy 90 0.1", "frame count 'happy' is not a whole number"),  # columns swapped
        ("sample_00000002 9O happy 0.1", "frame count '9O' is not a whole number"),
        ("sample_00000002 90.5 happy 0.1", "frame count '90.5' is not a whole number"),
        ("sample_00000002 -3 happy 0.1", "frame count '-3' is not a whole number"),
        ("sample_00000002 90 happy 0.1 0.7", "got 5 field"),
        ("sample_00000002 90", "got 2 field"),
        ("sample_00000002 90 happy high", "valence 'high' is not a number"),
        ("sample_00000002 90 happy nan", "valence 'nan' is not a finite number"),
    ],
)
def test_ncev_malformed_line_is_named(tmp_path, line, problem):
    path = _write(tmp_path / "labels.txt", f"sample_00000001 90 happy 0.0\n\n{line}\nsample_3 10 sad 0\n")
    with _raises_at(path, 3, problem):
        read_ncev(path)


def test_ncev_label_numbers_must_be_whole(tmp_path):
    path = _write(tmp_path / "labels.txt", "00001 40 3 0\n00002 40 3.0 0\n")
    with _raises_at(path, 2, r"label '3\.0' is not a label number 1\.\.7"):
        read_ncev(path, DFEW_LABELS)
    path = _write(tmp_path / "labels.txt", "00001 40 8 0\n")
    with _raises_at(path, 1, r"label number 8 outside 1\.\.7"):
        read_ncev(path, DFEW_LABELS)


# -- subtitles -------------------------------------------------------------------------------------
MER2023_SUBTITLES = (
    "name,sentence\r\n"
    'sample_00000001,"Well, I told you so."\r\n'
    "sample_00000047,What?\r\n"
    'sample_00000088,"She said ""no"", and left."\r\n'
    'samplenew_00006611,"A line\r\nand its continuation"\r\n'  # a quoted line break: legitimate
    "sample_00000100,\r\n"  # nothing said
)


def test_subtitles_as_released(tmp_path):
    subs = read_subtitles(_write(tmp_path / "subtitles.csv", MER2023_SUBTITLES, "utf-8-sig"))
    assert subs == {
        "sample_00000001": "Well, I told you so.",
        "sample_00000047": "What?",
        "sample_00000088": 'She said "no", and left.',
        "samplenew_00006611": "A line\r\nand its continuation",
        "sample_00000100": "",
    }
    mer2024 = _write(
        tmp_path / "label-transcription.csv",
        'name,chinese,english\nsample_00000001,"你好，我很好",Hello; I am fine\n'
        'sample_00000002,没事,"Fine, really"\n',
    )
    assert read_subtitles(mer2024) == {
        "sample_00000001": "Hello; I am fine",
        "sample_00000002": "Fine, really",
    }


def test_subtitles_unterminated_quote_running_to_the_end_is_named(tmp_path):
    text = (
        "name,sentence\n"
        "sample_00000001,Hello\n"
        'sample_00000002,"I told you, so\n'  # the closing quote is missing
        "sample_00000003,Bye\n"
        "sample_00000004,Fine\n"
    )
    path = _write(tmp_path / "subtitles.csv", text)
    with _raises_at(path, 3, r"unterminated quote.*runs to the end of the file \(line 6\)"):
        read_subtitles(path)


def test_subtitles_unterminated_quote_closed_by_a_later_one_is_named(tmp_path):
    text = (
        "name,sentence\n"
        'sample_00000001,"I told you, so\n'  # open...
        "sample_00000002,Bye\n"
        'sample_00000003,"Fine, thanks"\n'  # ...and "closed" by the next quoted field's opening
        "sample_00000004,Hi\n"
    )
    path = _write(tmp_path / "subtitles.csv", text)
    with _raises_at(path, 2, r"unterminated quote.*closes on line 4 in the middle of a field"):
        read_subtitles(path)


def test_subtitles_wrong_number_of_fields_is_named(tmp_path):
    body = 'name,sentence\nsample_00000001,"two\nlines"\n'
    path = _write(tmp_path / "subtitles.csv", body + "sample_00000002,Hello,world\n")
    with _raises_at(path, 4, r"3 field\(s\) where the header \(name,sentence\) has 2"):
        read_subtitles(path)
    path = _write(tmp_path / "subtitles.csv", body + "sample_00000002\n")
    with _raises_at(path, 4, r"1 field\(s\) where the header"):
        read_subtitles(path)
    path = _write(tmp_path / "subtitles.csv", body + ",Hello\n")
    with _raises_at(path, 4, "empty name"):
        read_subtitles(path)
    path = _write(tmp_path / "subtitles.csv", "video,text\nsample_00000001,Hello\n")
    with _raises_at(path, 1, "needs a 'name' column"):
        read_subtitles(path)
    # trailing commas (a spreadsheet export) and blank lines are no error
    path = _write(tmp_path / "subtitles.csv", "name,sentence,\n\nsample_00000001,Hello,\n\n")
    assert read_subtitles(path) == {"sample_00000001": "Hello"}


def test_classification_folder_refuses_a_broken_subtitle_file(tmp_path):
    folder = tmp_path / "MER2023-SEMI"
    _write(folder / "labels.txt", NCEV)
    _write(folder / "subtitles.csv", 'name,sentence\nsample_00000001,"Well, I\nsample_00000047,What?\n')
    with pytest.raises(EmotionLlamaError, match=r"subtitles\.csv:2: unterminated quote"):
        read_classification_folder(folder)


# -- label lists as CSV, DFEW split files, references ---------------------------------------------------
def test_label_csv_as_released(tmp_path):
    path = _write(
        tmp_path / "label-disdim.csv",
        "name,discrete,valence\nsample_00000001,happy,2.5\nsample_00000047,surprise,-10\nsample_00000088,,\n",
    )
    clips = read_label_csv(path)
    assert [(c.name, c.label, c.valence) for c in clips] == [
        ("sample_00000001", "happy", 2.5),
        ("sample_00000047", "surprise", None),
        ("sample_00000088", None, None),
    ]
    split = _write(tmp_path / "test(single-labeled)" / "set_1.csv", "video_name,label\n1,3\n16372,7\n")
    assert [(c.name, c.label) for c in read_dfew_split(split)] == [("00001", "neutral"), ("16372", "fear")]


def test_label_csv_errors_name_the_real_line(tmp_path):
    # a blank line and a quoted line break come before the bad row: it is on line 6
    text = 'name,discrete,valence\nsample_1,happy,1\n\n"sample\n2",sad,0\nsample_3,happy,high\n'
    path = _write(tmp_path / "label-disdim.csv", text)
    with _raises_at(path, 6, "valence 'high' is not a number"):
        read_label_csv(path)
    path = _write(tmp_path / "label-disdim.csv", "name,discrete,valence\nsample_1,happy\n")
    with _raises_at(path, 2, r"2 field\(s\) where the header \(name,discrete,valence\) has 3"):
        read_label_csv(path)
    path = _write(tmp_path / "label-disdim.csv", "name,valence\nsample_1,1\n")
    with _raises_at(path, 1, "needs a name column"):
        read_label_csv(path)
    path = _write(tmp_path / "label-disdim.csv", 'name,discrete,valence\nsample_1,"happy,1\nsample_2,sad,0\n')
    with _raises_at(path, 2, "unterminated quote"):
        read_label_csv(path)


def test_dfew_split_errors_name_the_line(tmp_path):
    path = _write(tmp_path / "set_1.csv", "video_name,label\n1,3\n2,3.0\n")
    with _raises_at(path, 3, r"label '3\.0' is not a label number 1\.\.7"):
        read_dfew_split(path)
    path = _write(tmp_path / "set_1.csv", "video_name,label\n1,3\n2\n")
    with _raises_at(path, 3, r"1 field\(s\) where the header \(video_name,label\) has 2"):
        read_dfew_split(path)


def test_references_as_released_and_malformed(tmp_path):
    path = _write(
        tmp_path / "references.csv",
        'name,reason\nsample_00000001,"She smiles, so she is happy."\nsample_00000047,He frowns.\n',
    )
    assert read_references(path, "reason") == {
        "sample_00000001": "She smiles, so she is happy.",
        "sample_00000047": "He frowns.",
    }
    ov = _write(tmp_path / "ov.csv", 'name,openset\nsample_00000001,"[happy, relieved]"\n')
    assert read_references(ov, "openset") == {"sample_00000001": "[happy, relieved]"}
    path = _write(tmp_path / "references.csv", "name,reason\nsample_00000001,fine\nsample_00000002\n")
    with _raises_at(path, 3, r"1 field\(s\) where the header"):
        read_references(path, "reason")
    path = _write(tmp_path / "references.csv", 'name,reason\nsample_00000001,"He frowns\nsample_2,x\n')
    with _raises_at(path, 2, "unterminated quote"):
        read_references(path, "reason")
    path = _write(tmp_path / "references.csv", "name,caption_text\nsample_00000001,fine\n")
    with _raises_at(path, 1, "needs 'name' and 'reason' columns"):
        read_references(path, "reason")
