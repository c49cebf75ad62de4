import pytest

from mepipe.datasets.errors import DatasetError
from mepipe.datasets.layouts import ckplus_emotion_file, get_layout, smic_clip_folder


@pytest.mark.parametrize(
    "layout, subject, clip, emotion, frame, expected",
    [
        ("casme2", 1, "EP02_01f", None, 46, "sub01/EP02_01f/img46.jpg"),
        ("casme2", "sub1", "EP02_01f", None, 9, "sub01/EP02_01f/img9.jpg"),
        ("samm", 6, "006_1_2", None, 5562, "006/006_1_2/006_05562.jpg"),
        ("samm", "006", "006_1_2", None, 5562, "006/006_1_2/006_05562.jpg"),
        ("smic", "s01", "s01_ne_01", "negative", 46433, "HS/s1/micro/negative/s1_ne_01/reg_image046433.bmp"),
        ("ckplus", "S005", "001", None, 1, "cohn-kanade-images/S005/001/S005_001_00000001.png"),
    ],
)
def test_frame_paths_match_the_real_layouts(layout, subject, clip, emotion, frame, expected):
    spec = get_layout(layout)
    path = spec.clip_folder(subject, clip, emotion) / spec.frame_name(subject, clip, frame)
    assert str(path) == expected
    assert spec.frame_number(path.name) == frame


def test_frame_numbers_parse_numerically_and_reject_other_files():
    casme2 = get_layout("casme2")
    names = ["img10.jpg", "img9.jpg", "img100.jpg", "Thumbs.db"]
    numbers = [casme2.frame_number(n) for n in names]
    assert numbers == [10, 9, 100, None]


def test_ckplus_label_file_and_smic_clip_names():
    assert str(ckplus_emotion_file("S005", "001", 11)) == "Emotion/S005/001/S005_001_00000011_emotion.txt"
    assert smic_clip_folder("s01_po_02") == "s1_po_02"
    with pytest.raises(DatasetError, match="s1_ne_01"):
        smic_clip_folder("subject1_negative")


def test_bad_names_get_clear_errors():
    with pytest.raises(DatasetError, match="unknown layout 'casme3'"):
        get_layout("casme3")
    with pytest.raises(DatasetError, match="CASME II subject 'x7'"):
        get_layout("casme2").subject_folder("x7")
    with pytest.raises(DatasetError, match="emotion must be one of"):
        get_layout("smic").clip_folder("s1", "s1_ne_01", "happy")
