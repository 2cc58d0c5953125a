"""Pair mining at exact ties: a similarity exactly at a threshold is not selected (the rules
use strict inequalities). The anchor is (1, 0), so its similarities are the first coordinates
of the other rows, and every threshold below is exact in float32."""
import math

import torch

import losses


def unit_rows(*cosines):
    """Row 0: the anchor (1, 0); then one unit vector per cosine with the anchor."""
    rows = [[1.0, 0.0]] + [[c, math.sqrt(1 - c * c)] for c in cosines]
    return torch.tensor(rows)


def anchor_row(masks):
    return [[bool(v) for v in mask[0]] for mask in masks]


def test_contrastive_negative_exactly_at_the_margin_is_not_selected():
    emb = unit_rows(0.5, 0.625)  # negatives with S = 0.5 (= margin) and 0.625
    labels = torch.tensor([0, 1, 2])
    assert (emb @ emb.t())[0, 1:].tolist() == [0.5, 0.625]
    pos, neg = anchor_row(losses.create('SCon', margin=0.5)(emb, labels))
    assert neg == [False, False, True] and pos == [False, False, False]


def test_multi_similarity_negative_exactly_at_the_threshold_is_not_selected():
    """Negatives are kept when S + margin > the anchor's least similar positive (0.75)."""
    emb = unit_rows(0.75, 0.5, 0.625)  # positive; negatives 0.5 + 0.25 = 0.75 (tie), 0.875
    labels = torch.tensor([0, 0, 1, 2])
    pos, neg = anchor_row(losses.create('SMS', margin=0.25)(emb, labels))
    assert neg == [False, False, False, True]
    assert pos == [False, True, False, False]  # 0.75 - 0.25 < 0.625: the row is kept


def test_multi_similarity_positive_exactly_at_the_threshold_is_not_selected():
    """Positives are kept when S - margin < the anchor's most similar negative (0.5)."""
    emb = unit_rows(0.75, 0.625, 0.5)  # positives 0.75 - 0.25 = 0.5 (tie), 0.375; negative
    labels = torch.tensor([0, 0, 0, 1])
    pos, neg = anchor_row(losses.create('SMS', margin=0.25)(emb, labels))
    assert pos == [False, False, True, False]
    assert neg == [False, False, False, True]  # 0.5 + 0.25 > 0.625: the row is kept
