"""Evaluation: feature extraction, Recall@K and MAP@R."""
from .extract import ExtractionStopped, extract_features
from .retrieval import RECALL_KS, map_at_r, recall_at_ks, recall_ks_for, retrieval_metrics

__all__ = ['extract_features', 'ExtractionStopped', 'recall_at_ks', 'map_at_r',
           'retrieval_metrics', 'RECALL_KS', 'recall_ks_for']
