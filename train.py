"""Plain deep metric learning (no MMSI): the same as `python MMSI_train.py --MMSI 0`."""
import sys

from MMSI_train import main

if __name__ == '__main__':
    sys.exit(main(MMSI=0))
