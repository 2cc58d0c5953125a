"""utils/args.py: the flags, declared once, their types, roles and the --help groups."""
import argparse
import dataclasses
import re

import pytest

from utils import args
from utils.args import (FIXED_IN_RUN, MMSI_ONLY, Flag, area_fraction, build_parser, flag_names,
                        flags_with, loss_parameter, positive_float, positive_int, str2bool)
from utils.config import parse_args


def help_sections(monkeypatch):
    """{group title: [the long options --help lists under it]}."""
    monkeypatch.setenv('COLUMNS', '100')
    sections, title = {}, None
    for line in build_parser().format_help().splitlines():
        if line and not line.startswith(' '):
            title = line.rstrip(':')
            sections[title] = []
        elif title is not None and re.match(r'  --', line):
            sections[title].append(line.split()[0])
    return sections


def test_flag_names_are_every_dest_of_the_parser():
    names = flag_names()
    assert names == set(vars(build_parser().parse_args([])))
    assert 'weight_decay' in names and 'weight-decay' not in names and 'help' not in names


def test_the_mmsi_help_group_lists_mmsi_and_the_flags_that_only_mmsi_reads(monkeypatch):
    mmsi_group = help_sections(monkeypatch)['MMSI']
    assert mmsi_group[0] == '--MMSI'
    assert mmsi_group[1:] == ['--' + name for name in flags_with(MMSI_ONLY)]


def test_official_spellings_aliases_and_abbreviations_are_accepted():
    flags = build_parser().parse_args(['--epoch', '5', '--weight-decay', '1e-4', '-j', '3',
                                       '-b', '12'])
    assert (flags.epochs, flags.weight_decay, flags.nThreads, flags.batch_size) == \
        (5, 1e-4, 3, 12)
    flags = build_parser().parse_args(['--weight_decay', '2e-4', '--nThreads', '1'])
    assert (flags.weight_decay, flags.nThreads) == (2e-4, 1)


def test_editing_a_default_changes_it_in_the_parser_the_help_and_the_configuration(
        monkeypatch):
    edited = tuple(dataclasses.replace(flag, default=3e-4) if flag.name == 'lr' else flag
                   for flag in args.FLAGS)
    monkeypatch.setattr(args, 'FLAGS', edited)
    monkeypatch.setenv('COLUMNS', '100')
    assert build_parser().parse_args([]).lr == 3e-4
    assert re.search(r'--lr LR +Adam learning rate \(default: 0\.0003\)',
                     build_parser().format_help())
    config = parse_args([])
    assert (config.lr, config.meta_lr) == (3e-4, 3e-4)  # --meta_lr follows --lr when unset


def test_a_new_flag_is_one_declaration(monkeypatch):
    new = Flag('--crop_jitter', 'data', 4, positive_int, roles=(FIXED_IN_RUN,),
               help='pixels of random shift')
    monkeypatch.setattr(args, 'FLAGS', args.FLAGS + (new,))
    assert '--crop_jitter' in help_sections(monkeypatch)['data']
    assert 'crop_jitter' in flag_names() and flags_with(FIXED_IN_RUN)[-1] == 'crop_jitter'
    assert parse_args([]).crop_jitter == 4
    assert parse_args(['--crop_jitter', '2']).crop_jitter == 2
    with pytest.raises(SystemExit):  # argparse: "argument --crop_jitter: expected ..."
        build_parser().parse_args(['--crop_jitter', '0'])


def test_a_declaration_with_an_unknown_role_or_concern_is_refused():
    with pytest.raises(ValueError, match='fixed'):
        Flag('--x', 'data', roles=('fixed',))
    with pytest.raises(ValueError, match='colour'):
        Flag('--x', 'colour')
    with pytest.raises(ValueError, match='not_a_role'):
        flags_with('not_a_role')


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
