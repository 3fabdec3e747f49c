"""Pure parts of the LLM export: GGML block maths, their ONNX Runtime ops, config writing, check helpers."""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import gguf
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from tritonclient.grpc import model_config_pb2 as mc

from export_scripts import llm, llm_check, llm_quant
from export_scripts.common import ExportError, read_config, write_config
from triton_models.llm.prefill import aligned

RNG = np.random.default_rng(0)


def weight(rows: int, cols: int) -> np.ndarray:
    return (RNG.standard_normal((rows, cols)) * 0.05).astype(np.float32)


@pytest.mark.parametrize("kind", [llm_quant.Q4_1, llm_quant.Q8_0])
def test_unpacked_blocks_dequantise_like_gguf(kind):
    raw = gguf.quants.quantize(weight(6, 96), llm_quant.KINDS[kind])
    blocks = llm_quant.from_ggml(raw, kind)
    expected = gguf.quants.dequantize(raw, llm_quant.KINDS[kind])
    assert blocks.shape == (6, 96)
    np.testing.assert_array_equal(blocks.dequantize(), expected)


def test_q4_1_codes_follow_the_gguf_nibble_order():
    # One block: element j in the low nibble of byte j, element j + 16 in the high nibble.
    codes = np.arange(32) % 16
    qs = (codes[:16] | (codes[16:] << 4)).astype(np.uint8)
    header = np.array([1.0, 0.5], np.float16).view(np.uint8)  # d = 1, m = 0.5
    blocks = llm_quant.from_ggml(np.concatenate([header, qs])[None], llm_quant.Q4_1)
    np.testing.assert_array_equal(blocks.codes[0], codes)
    np.testing.assert_array_equal(blocks.dequantize()[0], codes + 0.5)


def test_nibble_packing_round_trips_in_matmul_nbits_order():
    codes = RNG.integers(0, 16, (3, 64)).astype(np.uint8)
    packed = llm_quant.pack_nibbles(codes)
    assert packed.shape == (3, 2, 16)
    assert packed[0, 0, 0] == codes[0, 0] | (codes[0, 1] << 4)  # element 2i low, 2i + 1 high
    np.testing.assert_array_equal(llm_quant.unpack_nibbles(packed), codes)


@pytest.mark.parametrize("kind", [llm_quant.Q4_1, llm_quant.Q8_0])
def test_matmul_nbits_weight_represents_the_blocks(kind):
    blocks = llm_quant.quantize(weight(8, 64), kind)
    nbits = llm_quant.matmul_nbits_weight(blocks)
    assert nbits.bits == (4 if kind == llm_quant.Q4_1 else 8)
    assert (nbits.correction is None) == (kind == llm_quant.Q8_0)
    np.testing.assert_allclose(nbits.dequantize(), blocks.dequantize(), rtol=1e-6, atol=1e-7)


def test_take_rows_reorders_whole_rows():
    blocks = llm_quant.quantize(weight(4, 32), llm_quant.Q4_1)
    order = np.array([2, 0, 3, 1])
    np.testing.assert_array_equal(blocks.take_rows(order).dequantize(), blocks.dequantize()[order])


def test_unpermute_rows_matches_transformers_gguf_loader():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    rows = np.arange(24)
    expected = LlamaTensorProcessor(config={})._reverse_permute_weights(rows[:, None], 3)[:, 0]
    np.testing.assert_array_equal(llm.unpermute_rows(rows, 3), expected)


def test_weight_key_is_content_and_shape():
    w = weight(4, 32)
    assert llm_quant.weight_key(w) == llm_quant.weight_key(w.copy())
    assert llm_quant.weight_key(w) != llm_quant.weight_key(w.reshape(8, 16))
    assert llm_quant.weight_key(w) != llm_quant.weight_key(w + 1e-6)


def tiny_graph(embedding: np.ndarray, linear: np.ndarray) -> onnx.ModelProto:
    """ids -> Gather(embedding) -> MatMul(linear.T): the legacy exporter's Embedding + Linear."""
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["h"]),
        helper.make_node("MatMul", ["h", "w_t"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", linear.shape[0]])],
        [
            numpy_helper.from_array(embedding, "emb"),
            numpy_helper.from_array(np.ascontiguousarray(linear.T), "w_t"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model: onnx.ModelProto, ids: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"ids": ids})[0]


@pytest.mark.parametrize("linear_kind", [llm_quant.Q4_1, llm_quant.Q8_0])
def test_quantised_graph_computes_with_the_dequantised_blocks(linear_kind):
    embedding, linear = weight(50, 64), weight(48, 64)
    emb_blocks, lin_blocks = (
        llm_quant.quantize(embedding, llm_quant.Q8_0),
        llm_quant.quantize(linear, linear_kind),
    )
    model = tiny_graph(embedding, linear)
    keys = {llm_quant.weight_key(embedding): emb_blocks, llm_quant.weight_key(linear): lin_blocks}
    replaced = llm_quant.quantize_graph(model, keys, accuracy_level=0)
    assert replaced == {"MatMul": 1, "Gather": 1}
    assert {"emb", "w_t"}.isdisjoint(i.name for i in model.graph.initializer)  # fp32 weights dropped
    ids = np.array([[3, 7, 49], [0, 1, 2]], np.int64)
    expected = emb_blocks.dequantize()[ids] @ lin_blocks.dequantize().T
    np.testing.assert_allclose(run(model, ids), expected, rtol=1e-5, atol=1e-5)


def test_quantise_graph_leaves_unknown_weights_and_q4_embeddings_in_fp32():
    embedding, linear = weight(50, 64), weight(48, 64)
    model = tiny_graph(embedding, linear)
    keys = {llm_quant.weight_key(embedding): llm_quant.quantize(embedding, llm_quant.Q4_1)}
    assert llm_quant.quantize_graph(model, keys) == {"MatMul": 0, "Gather": 0}
    assert [n.op_type for n in model.graph.node] == ["Gather", "MatMul"]


def test_left_pad():
    ids, mask = llm_check.left_pad([[5, 6, 7], [8]], pad_id=2)
    np.testing.assert_array_equal(ids, [[5, 6, 7], [2, 2, 8]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [0, 0, 1]])


def test_agreement_and_kl():
    ref = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]]))
    assert llm_check.agreement(ref, ref) == (1.0, pytest.approx(0.0, abs=1e-12))
    other = np.log(np.array([[0.2, 0.7, 0.1], [0.1, 0.8, 0.1]]))
    top1, kl = llm_check.agreement(ref, other)
    assert top1 == 0.5
    assert kl == pytest.approx((0.7 * np.log(0.7 / 0.2) + 0.2 * np.log(0.2 / 0.7)) / 2)


def test_until_eos():
    assert llm_check.until_eos([4, 5, 2, 9], {2}) == [4, 5, 2]
    assert llm_check.until_eos([4, 5], {2}) == [4, 5]


def test_resolve_source(tmp_path):
    with pytest.raises(ExportError, match="not found"):
        llm.resolve_source(str(tmp_path / "missing.gguf"))
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert llm.resolve_source(str(tmp_path / "m.gguf")) == llm.Source(str(tmp_path), "m.gguf")
    assert llm.resolve_source("org/model").local_files == []


@pytest.mark.parametrize("precision, served", [("q4", llm.QUANT_FILE), ("fp32", llm.FP32_FILE)])
def test_model_config_follows_the_contract(tmp_path, precision, served):
    parser = argparse.ArgumentParser()
    llm.add_arguments(parser)
    args = parser.parse_args(["--precision", precision, "--max-num-seqs", "4"])
    tokenizer = SimpleNamespace(chat_template="{{ messages }}\n", bos_token="<s>", eos_token="</s>")
    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=8192))
    config = read_config(write_config(tmp_path, llm.model_config(args, tokenizer, model)))
    assert (config.name, config.backend, config.max_batch_size) == (llm.MODEL_NAME, "python", 0)
    assert config.model_transaction_policy.decoupled
    inputs = {i.name: i for i in config.input}
    assert list(inputs) == [
        "text_input",
        "stream",
        "sampling_parameters",
        "exclude_input_in_output",
        "return_finish_reason",
        "return_num_input_tokens",
        "return_num_output_tokens",
        "return_logprobs",
    ]
    assert not inputs["text_input"].optional and all(
        i.optional for n, i in inputs.items() if n != "text_input"
    )
    outputs = {o.name: (mc.DataType.Name(o.data_type), list(o.dims)) for o in config.output}
    assert outputs == {
        "text_output": ("TYPE_STRING", [-1]),
        "finish_reason": ("TYPE_STRING", [-1]),
        "num_input_tokens": ("TYPE_UINT32", [1]),
        "num_output_tokens": ("TYPE_UINT32", [1]),
        "logprobs": ("TYPE_STRING", [-1]),
    }
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["openai_task"] == "chat" and params["model_file"] == served
    assert params["context_length"] == "8192" and params["max_num_seqs"] == "4"
    assert params["chat_template"] == "{{ messages }}\n"
    assert (params["bos_token"], params["eos_token"]) == ("<s>", "</s>")
    assert {"max_kv_tokens", "max_queue", "intra_op_thread_count"} <= set(params)


def test_concat_rows_stacks_blocks_like_their_weights():
    a, b = (
        llm_quant.quantize(weight(4, 64), llm_quant.Q4_1),
        llm_quant.quantize(weight(2, 64), llm_quant.Q4_1),
    )
    np.testing.assert_array_equal(
        llm_quant.concat_rows([a, b]).dequantize(), np.concatenate([a.dequantize(), b.dequantize()])
    )
    with pytest.raises(ValueError, match="kinds"):
        llm_quant.concat_rows([a, llm_quant.quantize(weight(2, 64), llm_quant.Q8_0)])


@pytest.fixture(scope="module")
def tiny_llama():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        attn_implementation="eager",
    )
    return LlamaForCausalLM(config).eval()


ROWS = [[5, 9, 11, 3, 7, 8], [4, 12, 6]]


def torch_feeds(ids, mask, positions, logits_index=None):
    """The decoder's inputs before the past; logits at every column unless `logits_index` says otherwise."""
    import torch

    if logits_index is None:
        logits_index = np.broadcast_to(np.arange(ids.shape[1]), ids.shape[:2]).copy()
    return (torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(positions),
            torch.from_numpy(np.asarray(logits_index)))


def empty_past(batch: int):
    import torch

    return [torch.zeros(batch, 2, 0, 16) for _ in range(4)]


def test_lean_decoder_matches_transformers_with_rows_aligned_by_position(tiny_llama):
    import torch

    from export_scripts import llm_graph

    assert llm_graph.supports(tiny_llama.config)
    lean = llm_graph.decoder_for(tiny_llama)
    assert isinstance(lean, llm_graph.LeanLlamaDecoder)
    ids, mask, positions = aligned(ROWS)
    with torch.no_grad():
        full, *present = lean(*torch_feeds(ids, mask, positions), *empty_past(2))
        for row, tokens in enumerate(ROWS):  # each row as transformers computes it alone
            alone = tiny_llama(input_ids=torch.tensor([tokens])).logits[0]
            np.testing.assert_allclose(full[row, :len(tokens)].numpy(), alone.numpy(), rtol=1e-4, atol=1e-5)
        # The same tokens in two runs through the KV cache: 4 columns, then the rest with past = 4.
        _, *past = lean(*torch_feeds(ids[:, :4], mask[:, :4], positions[:, :4]), *empty_past(2))
        tail, *present2 = lean(*torch_feeds(ids[:, 4:], mask, positions[:, 4:]), *past)
    np.testing.assert_allclose(tail[0].numpy(), full[0, 4:].numpy(), rtol=1e-4, atol=1e-5)
    assert [tuple(p.shape) for p in present2] == [(2, 2, 6, 16)] * 4
    np.testing.assert_allclose(present2[0][0].numpy(), present[0][0].numpy(), rtol=1e-5, atol=1e-6)


def test_a_decode_step_writes_each_rows_kv_at_its_position(tiny_llama):
    """Rows of 6 and 3 tokens decode one token each: the short row's KV lands in column 3, inside its own
    padding, and its logits are those of the row decoding alone."""
    import torch

    from export_scripts import llm_graph

    lean = llm_graph.decoder_for(tiny_llama)
    ids, mask, positions = aligned(ROWS)
    step_ids = np.array([[2], [7]])
    step_mask = np.array([[1] * 7, [1, 1, 1, 1, 0, 0, 0]])
    with torch.no_grad():
        _, *past = lean(*torch_feeds(ids, mask, positions), *empty_past(2))
        logits, *present = lean(*torch_feeds(step_ids, step_mask, np.array([[6], [3]])), *past)
        _, *alone_past = lean(*torch_feeds(np.array([ROWS[1]]), np.ones((1, 3), np.int64), np.arange(3)[None]),
                              *empty_past(1))
        alone, *alone_present = lean(*torch_feeds(np.array([[7]]), np.ones((1, 4), np.int64), np.array([[3]])),
                                     *alone_past)
    np.testing.assert_allclose(logits[1].numpy(), alone[0].numpy(), rtol=1e-5, atol=1e-6)
    key = present[0].numpy()
    assert key.shape == (2, 2, 7, 16)
    np.testing.assert_allclose(key[1, :, :4], alone_present[0][0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(key[0, :, :6], past[0][0].numpy())  # the long row's tokens stay put


def test_lean_decoder_declines_other_architectures(tiny_llama):
    from export_scripts import llm_graph

    assert not llm_graph.supports(SimpleNamespace(**{**tiny_llama.config.to_dict(), "model_type": "gpt2"}))
    assert not llm_graph.supports(SimpleNamespace(**{**tiny_llama.config.to_dict(), "attention_bias": True}))


def test_failed_export_leaves_neither_partial_nor_model_folder(tmp_path, monkeypatch):
    def fail(model_dir, source, args):
        (model_dir / "1").mkdir(parents=True)
        raise ExportError("parity failed")

    monkeypatch.setattr(llm, "export_into", fail)
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    parser = argparse.ArgumentParser()
    llm.add_arguments(parser)
    args = parser.parse_args(["--model", str(tmp_path / "m.gguf")])
    args.repository, args.force = tmp_path / "repo", False
    with pytest.raises(ExportError, match="parity"):
        llm.run(args)
    assert [p.name for p in (tmp_path / "repo").iterdir()] == [f".{llm.MODEL_NAME}.lock"]


def test_concurrent_exports_run_once(tmp_path, monkeypatch):
    import threading
    import time

    calls = []

    def slow_export(model_dir, source, args):
        calls.append(model_dir.name)
        (model_dir / "1").mkdir(parents=True)
        for name in (llm.FP32_FILE, llm.QUANT_FILE, "model.py", "tokenizer.json"):
            (model_dir / "1" / name).write_text("")
        time.sleep(0.3)
        return {}

    monkeypatch.setattr(llm, "export_into", slow_export)
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    parser = argparse.ArgumentParser()
    llm.add_arguments(parser)
    args = parser.parse_args(["--model", str(tmp_path / "m.gguf")])
    args.repository, args.force = tmp_path / "repo", False
    threads = [threading.Thread(target=llm.run, args=(args,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    stamp = tmp_path / "repo" / llm.MODEL_NAME / ".export.json"
    assert llm.up_to_date(tmp_path / "repo" / llm.MODEL_NAME, json.loads(stamp.read_text())["digest"])
    (tmp_path / "repo" / llm.MODEL_NAME / "1" / llm.QUANT_FILE).unlink()  # a stamp without its files
    llm.run(args)
    assert len(calls) == 2
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == [
        f".{llm.MODEL_NAME}.lock",
        llm.MODEL_NAME,
    ]


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's Q/K row order (interleaved halves for its RoPE)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path, model) -> None:
    """A GGUF holding the model's Linear weights as Q4_1 (Q/K permuted as llama.cpp stores them), the
    model's weights replaced by their dequantised values, as transformers' GGUF loader leaves them."""
    import torch
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    cfg = model.config
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    writer = gguf.GGUFWriter(str(path), "llama")
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or name == "lm_head":
            continue
        w = module.weight.detach().numpy()
        heads = {"q_proj": cfg.num_attention_heads, "k_proj": cfg.num_key_value_heads}.get(
            name.split(".")[-1]
        )
        stored = llama_cpp_permute(w, heads) if heads else w
        raw = gguf.quants.quantize(stored, gguf.GGMLQuantizationType.Q4_1)
        loaded = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q4_1)
        if heads:
            loaded = LlamaTensorProcessor(config={})._reverse_permute_weights(loaded, heads)
        module.weight.data = torch.from_numpy(np.ascontiguousarray(loaded))
        gguf_name = name_map.get_name(f"{name}.weight", try_suffixes=(".weight",))
        writer.add_tensor(gguf_name, raw, raw_dtype=gguf.GGMLQuantizationType.Q4_1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_blocks_are_found_unpermuted_and_checked(tmp_path, tiny_llama):
    import copy

    import torch

    model = copy.deepcopy(tiny_llama)
    write_gguf(tmp_path / "m.gguf", model)
    weights = {
        n: m.weight.detach().numpy() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
    }
    found = llm.gguf_blocks(model, tmp_path / "m.gguf", weights)
    assert len(found) == 7 * model.config.num_hidden_layers  # lm_head is tied: no tensor of its own
    for name, blocks in found.items():
        np.testing.assert_array_equal(blocks.dequantize(), weights[name])

    weights["model.layers.1.self_attn.k_proj"] = weights["model.layers.1.self_attn.k_proj"] + 1e-3
    with pytest.raises(ExportError, match="attn_k"):
        llm.gguf_blocks(model, tmp_path / "m.gguf", weights)


def test_first_difference():
    assert llm_check.first_difference([4, 5, 2], [4, 5, 2, 9]) is None
    assert llm_check.first_difference([4, 5, 6], [4, 7, 6]) == 1
    assert llm_check.first_difference([4, 5, 6], [4, 2]) == 1
    assert llm_check.first_difference([4, 5, 6], [4, 5]) == 2


def test_tied_embedding_and_lm_head_share_one_quantised_table():
    table = weight(50, 64)
    blocks = llm_quant.quantize(table, llm_quant.Q8_0)
    model = tiny_graph(table, table)  # Gather(table) then MatMul(table.T): tied, as SmolLM2's LM head
    keys = {llm_quant.weight_key(table): blocks}
    assert llm_quant.quantize_graph(model, keys, accuracy_level=0) == {"MatMul": 1, "Gather": 1}
    uint8 = [i for i in model.graph.initializer if i.data_type == TensorProto.UINT8]
    assert len(uint8) == 1  # one copy of the codes, reshaped for MatMulNBits
    ids = np.array([[3, 7, 49]], np.int64)
    expected = blocks.dequantize()[ids] @ blocks.dequantize().T
    np.testing.assert_allclose(run(model, ids), expected, rtol=1e-5, atol=1e-5)


def test_generic_wrapper_matches_the_lean_decoder(tiny_llama):
    """The fallback for other architectures (transformers' own forward) speaks the same signature and layout."""
    import torch

    from export_scripts import llm_graph

    ids, mask, positions = aligned(ROWS)
    lean = llm_graph.decoder_for(tiny_llama)
    generic = llm_graph.TransformersDecoder(tiny_llama.get_decoder(), tiny_llama.get_output_embeddings())
    step = torch_feeds(np.array([[2], [7]]), np.array([[1] * 7, [1, 1, 1, 1, 0, 0, 0]]), np.array([[6], [3]]))
    with torch.no_grad():
        outputs = []
        for decoder in (lean, generic):
            prefill = decoder(*torch_feeds(ids, mask, positions), *empty_past(2))
            outputs.append((prefill, decoder(*step, *prefill[1:])))
    for (lean_out, generic_out) in zip(*outputs):
        assert len(generic_out) == len(lean_out) == 5
        valid = (mask if lean_out[0].shape[1] > 1 else np.ones((2, 1))).astype(bool)
        np.testing.assert_allclose(generic_out[0].numpy()[valid], lean_out[0].numpy()[valid], rtol=1e-4, atol=1e-5)
        for present_generic, present_lean in zip(generic_out[1:], lean_out[1:]):
            np.testing.assert_allclose(present_generic.numpy(), present_lean.numpy(), rtol=1e-5, atol=1e-6)


def test_exported_graphs_carry_the_layout_and_unmarked_graphs_are_refused(tiny_llama, tmp_path):
    from export_scripts import llm_graph
    from triton_models.llm.decoder import KV_LAYOUT, KV_LAYOUT_KEY, OnnxDecoder

    path = tmp_path / "model.onnx"
    llm_graph.export(llm_graph.decoder_for(tiny_llama), path)
    graph = onnx.load(str(path))
    assert {p.key: p.value for p in graph.metadata_props}[KV_LAYOUT_KEY] == KV_LAYOUT
    assert "ScatterND" in {n.op_type for n in graph.graph.node}
    OnnxDecoder(path, threads=1)
    del graph.metadata_props[:]
    onnx.save(graph, str(path))
    with pytest.raises(ValueError, match="export the model again"):
        OnnxDecoder(path, threads=1)


def test_logits_only_at_the_asked_columns(tiny_llama):
    """A prefill asks for each row's last token only: the same values as the full logits there."""
    import torch

    from export_scripts import llm_graph

    lean = llm_graph.decoder_for(tiny_llama)
    ids, mask, positions = aligned(ROWS)
    last = np.array([[len(r) - 1] for r in ROWS])
    with torch.no_grad():
        full, *_ = lean(*torch_feeds(ids, mask, positions), *empty_past(2))
        picked, *_ = lean(*torch_feeds(ids, mask, positions, last), *empty_past(2))
    assert tuple(picked.shape) == (2, 1, 64)
    np.testing.assert_allclose(picked[:, 0].numpy(), full.numpy()[[0, 1], last[:, 0]], rtol=1e-5, atol=1e-6)
