"""Embeddings of a whole dataset, for evaluation."""
import sys

import torch
from tqdm import tqdm


class ExtractionStopped(Exception):
    """extract_features stopped between two batches because `should_stop()` said so."""


def extract_features(model, loader, device='cpu', progress=True, desc='extract', prepare=None,
                     should_stop=None):
    """Run `model` over every `(images, labels)` batch of `loader`, in eval mode.

    Returns (embeddings float32 [N, D] on the CPU, labels int64 [N]) in the loader's order.
    The model runs under `torch.inference_mode()`; afterwards every submodule gets back its
    own previous training mode (so a BatchNorm frozen in eval inside a training model stays
    frozen). A tqdm bar goes to stderr unless `progress` is False. `prepare(images, device)`
    turns a loader batch into the network input (default: a non-blocking copy to `device`).
    `should_stop()`, asked before each batch, abandons the extraction with ExtractionStopped.
    """
    previous_modes = {module: module.training for module in model.modules()}
    model.eval()
    emb_batches, label_batches = [], []
    try:
        with torch.inference_mode():
            for images, labels in tqdm(loader, desc=desc, disable=not progress,
                                       file=sys.stderr, unit='batch'):
                if should_stop is not None and should_stop():
                    raise ExtractionStopped
                inputs = (images.to(device, non_blocking=True) if prepare is None
                          else prepare(images, device))
                emb = model(inputs)
                emb_batches.append(emb.float().cpu())
                label_batches.append(torch.as_tensor(labels).cpu())
    finally:
        for module, was_training in previous_modes.items():
            module.training = was_training
    if not emb_batches:
        raise ValueError('extract_features: the loader yielded no batch (empty dataset?)')
    # Concatenated outside inference mode, so callers get ordinary tensors they may modify.
    return torch.cat(emb_batches), torch.cat(label_batches).long()
