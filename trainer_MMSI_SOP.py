"""MMSI on Stanford Online Products: a configuration of trainer_MMSI, not a copy of it.

SOP differs only in settings, all held by its data set spec (DataSet/specs.py): the dictionary
must hold 1000 classes before MMSI updates (the official constant), the head pools max +
average, and the 60k-image test set is evaluated every --eval_every iterations as well as every
--save_step epochs (the official code evaluated after every single iteration).
"""
from DataSet.specs import SPECS
from trainer_MMSI import step

SOP_DEFAULTS = SPECS['product'].run_defaults

__all__ = ['SOP_DEFAULTS', 'step']
