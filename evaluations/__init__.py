"""Evaluation: feature extraction, Recall@K, MAP@R and R-Precision."""
from .extract import ExtractionStopped, extract_features
from .retrieval import (RECALL_KS, map_at_r, r_precision, recall_at_ks, recall_ks_for,
                        retrieval_metrics)

__all__ = ['extract_features', 'ExtractionStopped', 'recall_at_ks', 'map_at_r', 'r_precision',
           'retrieval_metrics', 'RECALL_KS', 'recall_ks_for']
