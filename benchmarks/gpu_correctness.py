"""Correctness on a CUDA device (run by benchmarks/gpu_check.sh): the fast and exact meta-
gradients agree, bf16 autocast leaves the pair weights as in float32, and the gpu input
pipeline decodes like the CPU one. Prints one PASS/FAIL line per check; exit 1 on a failure."""
import os
import sys
import tempfile

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import losses  # noqa: E402
import models  # noqa: E402
from DataSet.image_list import ImageList  # noqa: E402
from DataSet.tensor_pipeline import EncodedImageList, collate, to_network_input  # noqa: E402
from models.meta_layers import meta_gradient, normalize_weights  # noqa: E402
from models.precision import MixedPrecision  # noqa: E402

# GPU_CHECK_DEVICE=cpu runs the same checks on the CPU (to try the script without a GPU)
DEVICE = torch.device(os.environ.get('GPU_CHECK_DEVICE', 'cuda'))
failures = []


def check(name, ok, detail):
    print(f'{"PASS" if ok else "FAIL"}  {name}: {detail}', flush=True)
    if not ok:
        failures.append(name)


def meta_weights():
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    model = models.create('BN_Inception', dim=512).to(DEVICE)
    x = torch.randn(40, 3, 227, 227, device=DEVICE) * 50
    y = (torch.arange(40) // 5).to(DEVICE)
    x_val = torch.randn(10, 3, 227, 227, device=DEVICE) * 50
    y_val = torch.arange(10, device=DEVICE)
    memory = torch.nn.functional.normalize(torch.randn(500, 512, device=DEVICE), dim=1)
    memory_labels = torch.arange(500, device=DEVICE) % 100
    crit_s, crit_w, crit_g = (losses.create(p + 'MS', margin=0.1) for p in 'SWG')
    # Same memory layout for both: float32 rounding alone moves pair weights by up to ~5e-3
    # (measured on the CPU against float64), so layouts are not mixed in the comparison.
    model.to(memory_format=torch.channels_last)
    full = MixedPrecision(model, channels_last=True)
    half = MixedPrecision(model, 'bf16', channels_last=True)
    masks = crit_s(full(x).detach(), y)

    def train_loss(emb, pair_weights):
        return crit_w(emb, y, pair_weights, *masks)

    def val_loss(val_emb):
        return crit_g(val_emb, y_val, memory, memory_labels)

    weights = {}
    for name, net, method in [('fp32 jvp', full, 'jvp'), ('fp32 exact', full, 'exact'),
                              ('bf16 jvp', half, 'jvp')]:
        grad, _ = meta_gradient(net, x, x_val, train_loss, val_loss, 1e-5, method=method)
        weights[name] = normalize_weights(grad)
    selected = masks[0] | masks[1]
    check('exact vs jvp pair weights (float32, TF32 off)',
          (weights['fp32 exact'] - weights['fp32 jvp']).abs().max() < 1e-2,
          f'max |diff| {(weights["fp32 exact"] - weights["fp32 jvp"]).abs().max():.2e} over '
          f'{int(selected.sum())} pairs')
    check('bf16 autocast vs float32 pair weights', (weights['bf16 jvp'] - weights['fp32 jvp'])
          .abs().max() < 1e-5, f'max |diff| {(weights["bf16 jvp"] - weights["fp32 jvp"]).abs().max():.2e}')
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True


def gpu_pipeline():
    with tempfile.TemporaryDirectory() as folder:
        rng = np.random.default_rng(0)
        paths = []
        for i in range(8):
            path = os.path.join(folder, f'{i}.jpg')
            Image.fromarray(rng.integers(0, 256, (300 + 10 * i, 400, 3), dtype=np.uint8)).save(
                path, quality=95)
            paths.append(path)
        images = ImageList(paths, [0] * 8)
        keys = [(i, 7 + i) for i in range(8)]
        cpu = to_network_input(collate([EncodedImageList(images, 227, 256, 0.16, True)[k]
                                        for k in keys])[0], 'cpu', 227)
        gpu_set = EncodedImageList(images, 227, 256, 0.16, True, mode='gpu')
        gpu = to_network_input(collate([gpu_set[k] for k in keys])[0], DEVICE, 227).cpu()
        diff = (gpu - cpu).abs().mean().item()
        check('nvJPEG + GPU crops vs CPU decode', diff < 3, f'mean |diff| {diff:.2f} of 255')


if __name__ == '__main__':
    name = torch.cuda.get_device_name(DEVICE) if DEVICE.type == 'cuda' else 'CPU'
    print(f'# {name}, torch {torch.__version__}')
    meta_weights()
    gpu_pipeline()
    sys.exit(1 if failures else 0)
