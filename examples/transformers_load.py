#!/usr/bin/env python3
"""Loads a packed Hugging Face model directory into `transformers`.

`padic-burst compress MODEL_DIR -o PACKED_DIR` copies the config and
tokenizer files unchanged beside the `.padic` shards, so `transformers`
reads them from the packed directory as it would from the original; the
weights come from `padic_burst.torch.load_file`. With `--reference MODEL_DIR`
the original model runs too and the outputs are compared bit for bit.

    padic-burst compress target/test-weights/minilm-model -o minilm-packed
    python examples/transformers_load.py minilm-packed --reference target/test-weights/minilm-model

Needs `pip install ./python torch transformers`.
"""

import argparse
import time

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

import padic_burst.torch


def load(packed):
    """The model of `packed` (a packed directory) with its decoded weights."""
    model = AutoModel.from_config(AutoConfig.from_pretrained(packed))
    weights = padic_burst.torch.load_file(packed)
    # Buffers a checkpoint carries but the model recomputes (position ids)
    # are "unexpected"; a weight the checkpoint lacks is an error.
    missing, _ = model.load_state_dict(weights, strict=False)
    if missing:
        raise SystemExit(f"{packed}: no weights for {missing}")
    return model.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("packed", help="a directory written by `padic-burst compress MODEL_DIR -o PACKED_DIR`")
    ap.add_argument("--reference", help="the original model directory, to compare outputs with")
    ap.add_argument("--text", default="padic-burst gives every weight back bit-exact")
    args = ap.parse_args()

    started = time.perf_counter()
    model = load(args.packed)
    print(f"{args.packed}: {sum(p.numel() for p in model.parameters())} parameters loaded "
          f"in {time.perf_counter() - started:.2f} s")
    inputs = AutoTokenizer.from_pretrained(args.packed)([args.text], return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs).last_hidden_state
    print(f"output {tuple(out.shape)}, first values {out[0, 0, :4].tolist()}")
    if args.reference:
        reference = AutoModel.from_pretrained(args.reference).eval()
        with torch.no_grad():
            want = reference(**inputs).last_hidden_state
        same = torch.equal(out, want)
        print(f"the same output as {args.reference}: {same}")
        return 0 if same else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
