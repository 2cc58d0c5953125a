"""MMSI on Stanford Online Products: MMSI_train.py with the SOP configuration as defaults
(trainer_MMSI_SOP.SOP_DEFAULTS); every flag can still be overridden on the command line."""
import sys

from MMSI_train import main
from trainer_MMSI_SOP import SOP_DEFAULTS

if __name__ == '__main__':
    sys.exit(main(**SOP_DEFAULTS))
