"""One name normaliser: label sets, the label-space encoder and label-space queries match names alike."""
import numpy as np
import pytest

from pc_ovseg.encoders.base import LabelEncoder
from pc_ovseg.labels import LabelSet, load_labelset, norm_name
from pc_ovseg.query import label_space_embeddings

SAME = [
    ("t-shirt", ["T Shirt", "t_shirt", "tshirt", "T-Shirt", "  t shirt "]),
    ("otherfurniture", ["other furniture", "Other_Furniture", "other-furniture"]),
    ("Tree", ["tree", "TREE"]),
]
DIFFERENT = [("chair", "chairs"), ("table", "desk"), ("other", "otherfurniture")]


def _three_ways(class_names, text):
    """The class index ``text`` resolves to at each call site (None = no match)."""
    ls = LabelSet.from_names(class_names)
    by_labelset = ls.id_of(text)
    i = LabelEncoder(class_names).index_of(text)
    by_encoder = None if i < 0 else i
    row = label_space_embeddings(list(class_names), [text])[0]
    by_query = int(np.argmax(row)) if row.any() else None
    return by_labelset, by_encoder, by_query


@pytest.mark.parametrize("name,variants", SAME)
def test_call_sites_agree_on_spellings(name, variants):
    classes = ["wall", name, "floor"]
    for text in [name] + variants:
        assert norm_name(text) == norm_name(name)
        assert _three_ways(classes, text) == (1, 1, 1), text
    for text in variants:  # and the other way round: the class spelt as the variant
        assert _three_ways(["wall", text, "floor"], name) == (1, 1, 1), text


@pytest.mark.parametrize("a,b", DIFFERENT)
def test_call_sites_agree_on_different_names(a, b):
    assert norm_name(a) != norm_name(b)
    assert _three_ways(["wall", a], b) == (None, None, None)


def test_first_class_of_a_name_wins_everywhere():
    classes = ["t-shirt", "wall", "tshirt"]  # one name twice: each call site picks the first
    assert _three_ways(classes, "T Shirt") == (0, 0, 0)


def test_scannet_otherfurniture_matches_spaced_query():
    sn = load_labelset("scannet20")
    assert "otherfurniture" in sn.names
    assert sn.id_of("other furniture") == sn.id_of("otherfurniture") is not None
    assert load_labelset("ScanNet-20").name == sn.name
