"""Embedding networks by name: `models.create('BN_Inception', data='cub', dim=512, ...)`."""
from models.BN_Inception import FEATURE_DIM, BN_Inception, load_pretrained, supported_width
from common.errors import InputError

# The official scripts spell the network both ways.
_FACTORY = {
    'BN_Inception': BN_Inception,
    'BN-Inception': BN_Inception,
}


def names():
    return sorted(_FACTORY)


def canonical_name(name):
    """One spelling per network, to compare the --net of a checkpoint with this run's."""
    return name.replace('-', '_')


def create(name, data='cub', dim=512, pretrained=None, freeze_bn=True, **kwargs):
    """The network `name`; `pretrained` is None (random init) or a weights/checkpoint path."""
    if name not in _FACTORY:
        raise InputError(f'--net {name!r} is unknown; known networks: {", ".join(names())}')
    return _FACTORY[name](data=data, dim=dim, pretrained=pretrained, freeze_bn=freeze_bn,
                          **kwargs)


__all__ = ['create', 'names', 'canonical_name', 'load_pretrained', 'supported_width',
           'FEATURE_DIM']
