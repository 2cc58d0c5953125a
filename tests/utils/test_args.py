"""utils/args.py: the flags, their types and the groups other code reads."""
import argparse

import pytest

from utils.args import (area_fraction, build_parser, flag_names, loss_parameter, mmsi_only_flags,
                        positive_float, positive_int, str2bool)


def test_flag_names_are_every_dest_of_the_parser():
    names = flag_names()
    assert {'lr', 'weight_decay', 'MMSI', 'd_size', 'save_dir', 'loss_param'} <= names
    assert 'weight-decay' not in names and 'help' not in names


def test_mmsi_only_flags_are_the_mmsi_group_without_mmsi_itself():
    assert mmsi_only_flags() == {'d_size', 'dict_capacity', 'dict_min_classes', 'val_batch_size',
                                 'val_num_instances', 'meta_lr', 'pair_weights', 'meta_grad'}
    assert mmsi_only_flags() < flag_names()


@pytest.mark.parametrize('kind, text', [(positive_int, '0'), (positive_int, '1.5'),
                                        (positive_float, '0'), (positive_float, 'nan'),
                                        (positive_float, 'inf'), (area_fraction, '1.5'),
                                        (str2bool, 'maybe')])
def test_typed_flags_refuse_what_they_cannot_take(kind, text):
    with pytest.raises(argparse.ArgumentTypeError):
        kind(text)


def test_loss_parameter_reads_name_and_number_or_text():
    assert loss_parameter('temperature=0.2') == ('temperature', 0.2)
    assert loss_parameter('k=3') == ('k', 3)
    assert loss_parameter('mode=hard') == ('mode', 'hard')
    with pytest.raises(argparse.ArgumentTypeError):
        loss_parameter('no_value')


def test_entry_point_defaults_override_the_flag_defaults():
    assert build_parser(MMSI=0).parse_args([]).MMSI == 0
    assert build_parser().parse_args([]).MMSI == 1
