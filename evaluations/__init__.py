"""Evaluation: feature extraction, Recall@K, MAP@R, R-Precision and NMI."""
from .extract import ExtractionStopped, extract_features
from .clustering import kmeans, nmi, normalized_mutual_info
from .retrieval import (RECALL_KS, map_at_r, r_precision, recall_at_ks, recall_ks_for,
                        retrieval_metrics, split_metrics)

__all__ = ['extract_features', 'ExtractionStopped', 'recall_at_ks', 'map_at_r', 'r_precision',
           'retrieval_metrics', 'split_metrics', 'RECALL_KS', 'recall_ks_for', 'nmi',
           'normalized_mutual_info', 'kmeans']
