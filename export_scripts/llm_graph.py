"""A lean Llama-family decoder for ONNX export, sharing the loaded transformers model's weights.

Tracing transformers' own forward gives ~3,600 nodes per decode step for SmolLM2 (shape arithmetic per layer,
KV heads repeated for grouped-query attention, seven projections per layer), and at 135 M parameters per-node
overhead, not the matrix work, sets the speed. Here shapes come from the inputs once, the mask and the rotary
tables are built once, grouped-query attention folds the query groups into rows instead of copying the KV
cache, and Q/K/V and gate/up run as one projection each. The export's greedy-parity check holds this module
to transformers' own `generate`.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

SUPPORTED = {"llama"}  # model_type values whose layers this module reproduces


def supports(model) -> bool:
    cfg = model.config
    return (
        cfg.model_type in SUPPORTED
        and cfg.hidden_act == "silu"
        and not getattr(cfg, "attention_bias", False)
        and not getattr(cfg, "mlp_bias", False)
        and (getattr(cfg, "rope_parameters", None) or {}).get("rope_type", "default") == "default"
    )


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


class LeanLlamaDecoder(torch.nn.Module):
    """The contract's decoder signature over a `LlamaForCausalLM`'s weights.

    `fused` maps each fused projection's name to the Linear modules whose weights it stacks (rows), so the
    quantiser can stack their blocks the same way.
    """

    def __init__(self, model):
        super().__init__()
        cfg = model.config
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.groups = self.heads // self.kv_heads
        self.eps = cfg.rms_norm_eps
        self.intermediate = cfg.intermediate_size
        self.scale = self.head_dim**-0.5
        self.embed = model.model.embed_tokens
        self.norm = model.model.norm
        self.lm_head = model.lm_head
        rotary = model.model.rotary_emb
        self.register_buffer("inv_freq", rotary.inv_freq.detach().clone().float(), persistent=False)
        self.rope_scaling = float(getattr(rotary, "attention_scaling", 1.0))
        self.layers = model.model.layers
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

    def forward(self, input_ids, attention_mask, position_ids, *past):
        seq = input_ids.shape[1]
        total = attention_mask.shape[1]
        kv, groups, dim = self.kv_heads, self.groups, self.head_dim
        q_size, kv_size = self.heads * dim, kv * dim

        # Rotary tables [batch, 1, seq, dim] and the additive mask [batch, 1, groups * seq, total], once.
        freqs = position_ids[..., None].float() * self.inv_freq
        angles = torch.cat([freqs, freqs], dim=-1)
        cos = (angles.cos() * self.rope_scaling)[:, None]
        sin = (angles.sin() * self.rope_scaling)[:, None]
        query_pos = torch.arange(seq) + (total - seq)
        causal = torch.arange(total)[None, :] <= query_pos[:, None]
        allowed = causal[None, None] & attention_mask[:, None, None, :].bool()
        mask = torch.where(allowed, 0.0, torch.finfo(torch.float32).min).repeat(1, 1, groups, 1)

        x = self.embed(input_ids)
        present = []
        for i, layer in enumerate(self.layers):
            h = self.rms_norm(x, layer.input_layernorm.weight)
            q, k, v = F.linear(h, self.qkv[i]).split([q_size, kv_size, kv_size], dim=-1)
            # Query heads h = j * groups + g share KV head j: fold the groups into rows of KV head j.
            q = reshape(q, 0, -1, kv, groups, dim).permute(0, 2, 3, 1, 4)
            q = reshape(self.rotate(q, cos[:, None], sin[:, None]), 0, 0, -1, dim)
            k = self.rotate(reshape(k, 0, -1, kv, dim).transpose(1, 2), cos, sin)
            v = reshape(v, 0, -1, kv, dim).transpose(1, 2)
            k = torch.cat([past[2 * i], k], dim=2)
            v = torch.cat([past[2 * i + 1], v], dim=2)
            present += [k, v]
            scores = torch.matmul(q, k.transpose(2, 3)) * self.scale + mask
            attn = torch.matmul(torch.softmax(scores, dim=-1), v)
            attn = reshape(attn, 0, 0, groups, -1, dim).permute(0, 3, 1, 2, 4)
            attn = reshape(attn, 0, -1, q_size)
            x = x + layer.self_attn.o_proj(attn)
            h = self.rms_norm(x, layer.post_attention_layernorm.weight)
            gate, up = F.linear(h, self.gate_up[i]).split([self.intermediate] * 2, dim=-1)
            x = x + layer.mlp.down_proj(F.silu(gate) * up)
        logits = self.lm_head(self.norm(x))
        return (logits, *present)


class DecoderWithCache(torch.nn.Module):
    """Flat tensors in and out (the contract's names), a DynamicCache built from them inside."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, *past):
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for layer, key, value in zip(cache.layers, past[0::2], past[1::2]):
            # Set the past directly: `update` would concatenate onto an empty constant the tracer bakes in.
            layer.lazy_initialization(key, value)
            layer.keys, layer.values = key, value
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=True,
        )
        present = [t for layer in out.cache.layers for t in (layer.keys, layer.values)]
        return (out.logits, *present)
