"""MMSI on Stanford Online Products: a configuration of trainer_MMSI, not a copy of it.

SOP differs only in settings: the dictionary must hold 1000 classes before MMSI updates (the
official constant, utils/args.DICT_MIN_CLASSES), the head pools max + average (models pick it
from --data product), and the 60k-image test set is evaluated every --eval_every iterations as
well as every --save_step epochs (the official code evaluated after every single iteration).
"""
from trainer_MMSI import build_criteria, step

SOP_DEFAULTS = dict(data='product', loss='MS', margin=0.03, lr=1e-7, dict_min_classes=1000,
                    eval_every=100, save_step=1, epochs=30)

__all__ = ['SOP_DEFAULTS', 'build_criteria', 'step']
