import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from triton_models.contract import INVALID_REQUEST, INVALID_TOKEN_IDS, ModelError
from triton_models.ort_runner import OrtRunner, create_session, thread_count, token_id_inputs


@pytest.fixture(scope="module")
def doubler(tmp_path_factory):
    """y = x + x over [batch, 3] floats; a second output z = x * x."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 3])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"]), helper.make_node("Mul", ["x", "x"], ["z"])],
                              "g", [x], [y, z])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    onnx.save(model, path)
    return create_session(path, threads=1)


def test_thread_count(monkeypatch):
    monkeypatch.delenv("MODELGATE_ORT_THREADS", raising=False)
    assert thread_count({}) == 0
    assert thread_count({"intra_op_thread_count": "3"}) == 3
    monkeypatch.setenv("MODELGATE_ORT_THREADS", "2")
    assert thread_count({}) == 2
    with pytest.raises(ValueError):
        thread_count({"intra_op_thread_count": "many"})
    with pytest.raises(ValueError):
        thread_count({"intra_op_thread_count": "-1"})


def test_batched_requests_are_merged_and_split_back(doubler):
    runner = OrtRunner(doubler, ["y", "z"], batching=True)
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.ones((1, 3), dtype=np.float32)
    calls = []
    runner.session = _Counting(doubler, calls)
    first, second = runner.run_many([{"x": a}, {"x": b}])
    assert calls == [3]  # one ONNX Runtime run for both requests
    np.testing.assert_array_equal(first["y"], a * 2)
    np.testing.assert_array_equal(first["z"], a * a)
    np.testing.assert_array_equal(second["y"], b * 2)


def test_a_bad_request_fails_alone(doubler):
    runner = OrtRunner(doubler, ["y"], batching=True)
    good = {"x": np.ones((1, 3), dtype=np.float32)}
    bad = {"x": np.ones((1, 3), dtype=np.float32), "w": np.ones((1, 3), dtype=np.float32)}
    results = runner.run_many([good, bad])
    np.testing.assert_array_equal(results[0]["y"], good["x"] * 2)
    assert isinstance(results[1], ModelError) and results[1].code == INVALID_REQUEST
    assert "no input(s) ['w']" in results[1].message


def test_incompatible_shapes_run_one_by_one(doubler):
    runner = OrtRunner(doubler, ["y"], batching=True)
    results = runner.run_many([{"x": np.ones((1, 3), np.float32)}, {"x": np.ones((1, 4), np.float32)}])
    np.testing.assert_array_equal(results[0]["y"], np.full((1, 3), 2, np.float32))
    assert isinstance(results[1], ModelError) and results[1].message == "input x has shape [1, 4]; this model takes [any, 3]"


def test_inputs_are_cast_to_the_model_dtype(doubler):
    runner = OrtRunner(doubler, ["y"], batching=False)
    out = runner.run_one({"x": np.ones((2, 3), dtype=np.int64)})
    assert out["y"].dtype == np.float32


def test_spinning_parameter():
    from triton_models.ort_runner import spinning

    assert spinning({}) is False and spinning({}, default=True) is True
    assert spinning({"intra_op_spinning": "true"}) is True
    assert spinning({"intra_op_spinning": "0"}, default=True) is False
    with pytest.raises(ValueError):
        spinning({"intra_op_spinning": "sometimes"})


class _Counting:
    """A session that records the batch size of each run."""

    def __init__(self, session, calls):
        self._session, self.calls = session, calls

    def run(self, names, feeds):
        self.calls.append(len(next(iter(feeds.values()))))
        return self._session.run(names, feeds)


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    """An embedding lookup as BERT exports it: Gather(table[10, 2], Cast(input_ids)), times the mask."""
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])
    out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", "sequence", 2])
    table = helper.make_tensor("table", TensorProto.FLOAT, [10, 2], np.arange(20, dtype=np.float32))
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids32"], to=TensorProto.INT32),
        helper.make_node("Gather", ["table", "ids32"], ["rows"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axes"], ["mask3"]),
        helper.make_node("Mul", ["rows", "mask3"], ["embedding"]),
    ]
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [2])
    graph = helper.make_graph(nodes, "g", [ids, mask], [out], initializer=[table, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("onnx") / "embedder.onnx"
    onnx.save(model, path)
    return path


def request(*ids: int) -> dict[str, np.ndarray]:
    return {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64)}


def test_token_id_inputs_are_found_through_a_cast(embedder):
    assert token_id_inputs(embedder) == {"input_ids": 10}


@pytest.mark.parametrize("bad_ids", [(1, 10, 2), (1, -1, 2), (2**40,)])
def test_token_ids_outside_the_vocabulary_fail_alone_in_a_batch(embedder, bad_ids):
    runner = OrtRunner(create_session(embedder, threads=1), ["embedding"], batching=True,
                       vocab_sizes=token_id_inputs(embedder))
    calls = []
    runner.session = _Counting(runner.session, calls)
    good, bad, other = request(1, 2, 3), request(*bad_ids), request(4, 5, 6)
    for _ in range(2):  # the identical retry gives the identical answer
        results = runner.run_many([good, bad, other])
        assert isinstance(results[1], ModelError) and results[1].code == INVALID_TOKEN_IDS
        assert results[1].param == "input"
        assert results[1].message == (f"input holds token id {[i for i in bad_ids if not 0 <= i < 10][0]}, outside "
                                      "this model's vocabulary: valid token ids are 0 to 9")
        np.testing.assert_array_equal(results[0]["embedding"][0, :, 0], [2, 4, 6])
        np.testing.assert_array_equal(results[2]["embedding"][0, :, 0], [8, 10, 12])
    assert calls == [2, 2]  # the good two still ran as one batch, the bad one never ran


@pytest.mark.parametrize("bad, message", [
    ({"input_ids": np.array([[1, 2]]), "attention_mask": np.ones((1, 3), np.int64)},
     "inputs input_ids and attention_mask differ in their sequence dimension (2 and 3)"),
    ({"input_ids": np.array([1, 2]), "attention_mask": np.ones(2, np.int64)},
     "input input_ids has shape [2]; this model takes [any, any]"),
    ({"input_ids": np.array([[b"one"]], dtype=object), "attention_mask": np.ones((1, 1), np.int64)},
     "input input_ids must hold int64 values"),
])
def test_malformed_requests_are_named_without_onnx_runtime_internals(embedder, bad, message):
    runner = OrtRunner(create_session(embedder, threads=1), ["embedding"], batching=True,
                       vocab_sizes=token_id_inputs(embedder))
    good, result = runner.run_many([request(1, 2), bad])
    assert good["embedding"].shape == (1, 2, 2)
    assert isinstance(result, ModelError) and result.code == INVALID_REQUEST and result.message == message
