"""Parameter counts worked out by hand from the architecture, independent of any counting code.

Every method in the registry needs an entry here: a new method's contract test fails until its count is written.
Each function returns (trainable, stored) for the tiny BERT of tests/tiny.py.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    vocab: int
    hidden: int
    layers: int
    intermediate: int
    positions: int
    labels: int

    @classmethod
    def of(cls, config) -> Shape:
        return cls(config.vocab_size, config.hidden_size, config.num_hidden_layers, config.intermediate_size,
                   config.max_position_embeddings, config.num_labels)

    @property
    def head(self) -> int:
        return self.hidden * self.labels + self.labels

    @property
    def body(self) -> int:
        h, i = self.hidden, self.intermediate
        embeddings = (self.vocab + self.positions + 2) * h + 2 * h  # word, position, 2 token types, LayerNorm
        layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h  # q k v o, LN, FFN in/out, LN
        pooler = h * h + h
        return embeddings + self.layers * layer + pooler


def lora(s: Shape, hp) -> tuple[int, int]:
    h, i, r = s.hidden, s.intermediate, hp["r"]
    if hp["targets"] == "attention":  # A (r x h) and B (h x r) on query and value
        n = s.layers * 2 * r * (h + h) + s.head
    else:  # all_linear: q, k, v, attention output, FFN in (h -> i) and out (i -> h) in every layer, and the pooler;
        # not the classifier (the head, trained in full)
        n = s.layers * (4 * r * (h + h) + 2 * r * (h + i)) + r * (h + h) + s.head
    return n, n


def ia3(s: Shape, hp) -> tuple[int, int]:
    # vectors on key, value (output side), attention-output dense and FFN-output dense (input side)
    n = s.layers * (3 * s.hidden + s.intermediate) + s.head
    return n, n


def prefix(s: Shape, hp) -> tuple[int, int]:
    prefixes = hp["num_virtual_tokens"] * s.layers * 2 * s.hidden
    if not hp["prefix_projection"]:
        return prefixes + s.head, prefixes + s.head
    e = hp["encoder_hidden_size"]
    mlp = (s.hidden * e + e) + (e * s.layers * 2 * s.hidden + s.layers * 2 * s.hidden)
    return hp["num_virtual_tokens"] * s.hidden + mlp + s.head, prefixes + s.head


def prompt(s: Shape, hp) -> tuple[int, int]:
    n = hp["num_virtual_tokens"] * s.hidden + s.head
    return n, n


def ptuning(s: Shape, hp) -> tuple[int, int]:
    e, h = hp["encoder_hidden_size"], s.hidden
    mlp = (h * e + e) + (e * e + e) + (e * h + h)
    embeddings = hp["num_virtual_tokens"] * h
    return embeddings + mlp + s.head, embeddings + s.head


def adapter(s: Shape, hp) -> tuple[int, int]:
    b, h = hp["bottleneck"], s.hidden
    n = s.layers * 2 * ((h * b + b) + (b * h + h)) + s.head
    return n, n


def loha(s: Shape, hp) -> tuple[int, int]:
    # two rank-r factor pairs, (h x r)(r x h) each, on query and value
    n = s.layers * 2 * 2 * hp["r"] * (s.hidden + s.hidden) + s.head
    return n, n


def dora(s: Shape, hp) -> tuple[int, int]:
    # LoRA's, plus a magnitude per output feature of every adapted linear layer
    h, i = s.hidden, s.intermediate
    if hp["targets"] == "attention":  # query and value: h outputs each
        magnitudes = s.layers * 2 * h
    else:  # q, k, v, attention output (h), FFN in (i), FFN out (h) in every layer, and the pooler (h)
        magnitudes = s.layers * (5 * h + i) + h
    n = lora(s, hp)[0] + magnitudes
    return n, n


def vera(s: Shape, hp) -> tuple[int, int]:
    # on query and value: lambda_d (r) and lambda_b (h outputs); the shared frozen A (r x h) and B (h x r) stored once
    r, h = hp["r"], s.hidden
    trained = s.layers * 2 * (r + h) + s.head
    return trained, trained + 2 * r * h


def lokr(s: Shape, hp) -> tuple[int, int]:
    # query and value, h x h each: h = 32 factors as 4 x 8 (the pair nearest its square root), so dW = W1 (x) W2 with
    # W1 4 x 4 (full) and W2 8 x 8, full when r >= 8 / 2, else two rank-r factors (8 x r)(r x 8)
    small, large = 4, 8
    assert small * large == s.hidden, "the hand count is for the tiny BERT's hidden size 32"
    w2 = large * large if hp["r"] >= large / 2 else hp["r"] * (large + large)
    n = s.layers * 2 * (small * small + w2) + s.head
    return n, n


def full(s: Shape, hp) -> tuple[int, int]:
    return s.body + s.head, s.body + s.head


HAND_COUNTS = {"lora": lora, "qlora": lora, "ia3": ia3, "prefix": prefix, "prompt": prompt, "ptuning": ptuning,
               "adapter": adapter, "loha": loha, "dora": dora, "vera": vera, "lokr": lokr, "full": full}
