"""Decoders for ONNX export, sharing the loaded transformers model's weights, with the KV cache laid out by position.

The contract (what `triton_models.llm` runs): inputs `input_ids` (or `inputs_embeds`), `attention_mask`
[batch, total], `position_ids` [batch, seq], `logits_index` [batch, n] (the columns whose logits are wanted:
a prefill needs only each row's last token; the LM head over every column of a 512-token chunk made 100 MB of
logits and 9% of a 500-token prefill's time) and `past_key_values.{i}.key/value` [batch, kv_heads, past, dim]; outputs `logits`
[batch, n, vocab] and `present.{i}.key/value` [batch, kv_heads, past + seq, dim].

**A token's KV sits at the column equal to its position** (`KV_LAYOUT` in the graph's metadata). Rows of a batch
are aligned at column 0, padding after their tokens, masked: a decode step writes each row's new KV at that row's
position (ScatterND), not at the end. Then a row's attention sums see its tokens at the same columns whether it
runs alone or beside longer rows, so its logits are bit for bit those of the row alone. With the left padding of
HF's `generate`, Softmax and attention x V accumulate a row's tokens in other SIMD lanes whenever its padding is
not a multiple of 8, and the int8 activations of the quantised graph turn that 1e-8 into a different token
(docs/llm-engine.md, "Batch invariance").

`LeanLlamaDecoder` (Llama-family models): tracing transformers' own forward gives ~3,600 nodes per decode step
for SmolLM2 (shape arithmetic per layer, KV heads repeated for grouped-query attention, seven projections per
layer), and at 135 M parameters per-node overhead, not the matrix work, sets the speed. Here shapes come from the
inputs once, the mask and the rotary tables are built once, grouped-query attention folds the query groups into
rows instead of copying the KV cache, and Q/K/V and gate/up run as one projection each. `TransformersDecoder`
runs any other architecture through transformers' own forward with the same layout. The export's parity checks
hold both to transformers' own `generate`.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import torch
from torch.nn import functional as F

from triton_models.llm.decoder import KV_LAYOUT, KV_LAYOUT_KEY

SUPPORTED = {"llama"}  # model_type values whose layers LeanLlamaDecoder reproduces
OPSET = 17


def supports(config) -> bool:
    """Whether LeanLlamaDecoder reproduces this (text) model config's layers."""
    return (
        config.model_type in SUPPORTED
        and config.hidden_act == "silu"
        and not getattr(config, "attention_bias", False)
        and not getattr(config, "mlp_bias", False)
        and (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default") == "default"
    )


def decoder_for(model, inputs_embeds: bool = False) -> torch.nn.Module:
    """The contract's decoder over a causal LM's (or a vision-language model's) language model."""
    backbone, lm_head = model.get_decoder(), model.get_output_embeddings()
    kind = LeanLlamaDecoder if supports(backbone.config) else TransformersDecoder
    return kind(backbone, lm_head, inputs_embeds)


class _Reshape(torch.autograd.Function):
    """Reshape to a constant shape where 0 copies the input's dimension (ONNX Reshape's rule).

    Give one -1 as well: torch's ONNX shape inference rejects a shape with zeros and no -1.

    The tracer would otherwise compute every target shape from `Shape` nodes at run time (4-6 nodes per
    reshape, six reshapes per layer).
    """

    @staticmethod
    def forward(ctx, x, shape):
        return x.reshape([x.shape[i] if size == 0 else size for i, size in enumerate(shape)])

    @staticmethod
    def symbolic(g, x, shape):
        return g.op("Reshape", x, g.op("Constant", value_t=torch.tensor(shape, dtype=torch.int64)))


def reshape(x: torch.Tensor, *shape: int) -> torch.Tensor:
    return _Reshape.apply(x, shape)


class _ScatterND(torch.autograd.Function):
    """`data` with `updates` written at `index` [..., 3] = (row, head, column): one ONNX ScatterND node."""

    @staticmethod
    def forward(ctx, data, index, updates):
        out = data.clone()
        out[index[..., 0], index[..., 1], index[..., 2]] = updates
        return out

    @staticmethod
    def symbolic(g, data, index, updates):
        return g.op("ScatterND", data, index, updates)


def kv_index(position_ids: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """ScatterND indices [batch, kv_heads, seq, 3]: (row, head, position) of every new token's KV."""
    batch, seq = position_ids.shape
    shape = (batch, kv_heads, seq)
    rows = torch.arange(batch)[:, None, None].expand(shape)
    heads = torch.arange(kv_heads)[None, :, None].expand(shape)
    return torch.stack([rows, heads, position_ids[:, None, :].expand(shape)], dim=-1)


def write_at_positions(past: torch.Tensor, new: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`present`: the past widened by the new tokens' count, each new token's KV at its position's column.

    For the longest row the new columns are the widened ones; a shorter row writes into its own padding and
    the copy the widening put at the end stays masked.
    """
    return _ScatterND.apply(torch.cat([past, new], dim=2), index, new)


def select_columns(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """hidden [batch, seq, width] at the columns `index` [batch, n]: [batch, n, width]."""
    return torch.gather(hidden, 1, index[..., None].expand(-1, -1, hidden.shape[-1]))


def attention_bias(attention_mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """Additive mask [batch, 1, seq, total]: a query at position p sees the key columns c <= p holding a token."""
    total = attention_mask.shape[1]
    causal = torch.arange(total)[None, None, :] <= position_ids[:, :, None]
    allowed = causal & attention_mask[:, None, :].bool()
    return torch.where(allowed, 0.0, torch.finfo(torch.float32).min)[:, None]


class LeanLlamaDecoder(torch.nn.Module):
    """The contract's decoder over a `LlamaModel`'s weights and its LM head.

    `fused` maps each fused projection's name to the Linear modules whose weights it stacks (rows, named as in
    a `LlamaForCausalLM`), so the quantiser can stack their blocks the same way.
    """

    def __init__(self, backbone, lm_head, inputs_embeds: bool = False):
        super().__init__()
        cfg = self.config = backbone.config
        self.inputs_embeds = inputs_embeds
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.groups = self.heads // self.kv_heads
        self.eps = cfg.rms_norm_eps
        self.intermediate = cfg.intermediate_size
        self.scale = self.head_dim**-0.5
        self.embed = backbone.embed_tokens
        self.norm = backbone.norm
        self.lm_head = lm_head
        rotary = backbone.rotary_emb
        self.register_buffer("inv_freq", rotary.inv_freq.detach().clone().float(), persistent=False)
        self.rope_scaling = float(getattr(rotary, "attention_scaling", 1.0))
        self.layers = backbone.layers
        self.fused = {}
        qkv, gate_up = [], []
        for i, layer in enumerate(self.layers):
            attn, mlp = layer.self_attn, layer.mlp
            qkv.append(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).detach())
            gate_up.append(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).detach())
            prefix = f"model.layers.{i}"
            self.fused[f"qkv.{i}"] = [f"{prefix}.self_attn.{p}_proj" for p in "qkv"]
            self.fused[f"gate_up.{i}"] = [f"{prefix}.mlp.gate_proj", f"{prefix}.mlp.up_proj"]
        self.qkv = torch.nn.ParameterList([torch.nn.Parameter(w, requires_grad=False) for w in qkv])
        self.gate_up = torch.nn.ParameterList([torch.nn.Parameter(w, requires_grad=False) for w in gate_up])

    def fused_weight(self, name: str) -> torch.Tensor:
        kind, index = name.split(".")
        return getattr(self, kind)[int(index)]

    def rms_norm(self, x, weight):
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    def rotate(self, x, cos, sin):
        half = self.head_dim // 2  # a constant: x.shape[-1] would be computed in the graph
        return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin

    def forward(self, tokens, attention_mask, position_ids, logits_index, *past):
        """`tokens`: input_ids [batch, seq], or inputs_embeds [batch, seq, hidden] when built with inputs_embeds."""
        kv, groups, dim = self.kv_heads, self.groups, self.head_dim
        q_size, kv_size = self.heads * dim, kv * dim

        # Rotary tables [batch, 1, seq, dim], the additive mask [batch, 1, groups * seq, total] and the KV write
        # indices, once.
        freqs = position_ids[..., None].float() * self.inv_freq
        angles = torch.cat([freqs, freqs], dim=-1)
        cos = (angles.cos() * self.rope_scaling)[:, None]
        sin = (angles.sin() * self.rope_scaling)[:, None]
        mask = attention_bias(attention_mask, position_ids).repeat(1, 1, groups, 1)
        index = kv_index(position_ids, kv)

        x = tokens if self.inputs_embeds else self.embed(tokens)
        present = []
        for i, layer in enumerate(self.layers):
            h = self.rms_norm(x, layer.input_layernorm.weight)
            q, k, v = F.linear(h, self.qkv[i]).split([q_size, kv_size, kv_size], dim=-1)
            # Query heads h = j * groups + g share KV head j: fold the groups into rows of KV head j.
            q = reshape(q, 0, -1, kv, groups, dim).permute(0, 2, 3, 1, 4)
            q = reshape(self.rotate(q, cos[:, None], sin[:, None]), 0, 0, -1, dim)
            k = self.rotate(reshape(k, 0, -1, kv, dim).transpose(1, 2), cos, sin)
            v = reshape(v, 0, -1, kv, dim).transpose(1, 2)
            k = write_at_positions(past[2 * i], k, index)
            v = write_at_positions(past[2 * i + 1], v, index)
            present += [k, v]
            scores = torch.matmul(q, k.transpose(2, 3)) * self.scale + mask
            attn = torch.matmul(torch.softmax(scores, dim=-1), v)
            attn = reshape(attn, 0, 0, groups, -1, dim).permute(0, 3, 1, 2, 4)
            attn = reshape(attn, 0, -1, q_size)
            x = x + layer.self_attn.o_proj(attn)
            h = self.rms_norm(x, layer.post_attention_layernorm.weight)
            gate, up = F.linear(h, self.gate_up[i]).split([self.intermediate] * 2, dim=-1)
            x = x + layer.mlp.down_proj(F.silu(gate) * up)
        logits = self.lm_head(self.norm(select_columns(x, logits_index)))
        return (logits, *present)


class TransformersDecoder(torch.nn.Module):
    """Transformers' own forward in the contract's signature and KV layout: a cache whose layers write at the
    positions, and the position mask given as a ready 4D mask (transformers uses a 4D mask as is)."""

    def __init__(self, backbone, lm_head, inputs_embeds: bool = False):
        super().__init__()
        self.backbone, self.lm_head, self.inputs_embeds = backbone, lm_head, inputs_embeds
        self.config = backbone.config

    def forward(self, tokens, attention_mask, position_ids, logits_index, *past):
        from transformers import DynamicCache

        index = kv_index(position_ids, past[0].shape[1])
        cache = DynamicCache(config=self.config)
        for layer, key, value in zip(cache.layers, past[0::2], past[1::2]):
            # Set the past directly: `update` would concatenate onto an empty constant the tracer bakes in.
            layer.lazy_initialization(key, value)
            layer.keys, layer.values = key, value
            layer.update = functools.partial(_update_at_positions, layer, index)
        given = {"inputs_embeds" if self.inputs_embeds else "input_ids": tokens}
        out = self.backbone(**given, attention_mask=attention_bias(attention_mask, position_ids),
                            position_ids=position_ids, cache=cache, use_cache=True)
        present = [t for layer in out.cache.layers for t in (layer.keys, layer.values)]
        return (self.lm_head(select_columns(out.last_hidden_state, logits_index)), *present)


def _update_at_positions(layer, index, key, value, *args, **kwargs):
    layer.keys = write_at_positions(layer.keys, key, index)
    layer.values = write_at_positions(layer.values, value, index)
    return layer.keys, layer.values


def io_names(num_layers: int, inputs_embeds: bool = False) -> tuple[list[str], list[str]]:
    kv = [f"{i}.{k}" for i in range(num_layers) for k in ("key", "value")]
    first = "inputs_embeds" if inputs_embeds else "input_ids"
    return ([first, "attention_mask", "position_ids", "logits_index", *(f"past_key_values.{n}" for n in kv)],
            ["logits", *(f"present.{n}" for n in kv)])


def export(decoder: torch.nn.Module, path: Path) -> None:
    """Trace `decoder` to ONNX at `path` with the contract's names, dynamic axes and layout mark."""
    import onnx

    cfg = decoder.config
    inputs, outputs = io_names(cfg.num_hidden_layers, decoder.inputs_embeds)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    batch, seq, past = 2, 3, 4  # every dynamic dimension >= 2, or the tracer may fix it
    first = torch.randn(batch, seq, cfg.hidden_size) if decoder.inputs_embeds else torch.randint(
        0, cfg.vocab_size, (batch, seq))
    past_names = inputs[4:]
    example = (
        first,
        torch.ones(batch, past + seq, dtype=torch.long),
        torch.arange(past, past + seq).repeat(batch, 1),
        torch.tensor([[seq - 2, seq - 1]] * batch),
        *[torch.randn(batch, cfg.num_key_value_heads, past, head_dim) for _ in past_names],
    )
    axes = {
        inputs[0]: {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "total_sequence"},
        "position_ids": {0: "batch", 1: "sequence"},
        "logits_index": {0: "batch", 1: "logits_positions"},
        "logits": {0: "batch", 1: "logits_positions"},
    }
    axes.update({name: {0: "batch", 2: "past_sequence"} for name in past_names})
    axes.update({name: {0: "batch", 2: "total_sequence"} for name in outputs[1:]})
    with torch.no_grad(), warnings.catch_warnings():
        # The legacy exporter is chosen on purpose (5-15x faster); its tracer warnings concern shapes the
        # parity checks then exercise (past=0, padding, other batch sizes).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(decoder, example, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False, do_constant_folding=True)
    graph = onnx.load(str(path))
    onnx.helper.set_model_props(graph, {KV_LAYOUT_KEY: KV_LAYOUT})
    onnx.save(graph, str(path))
