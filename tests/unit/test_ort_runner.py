import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from triton_models.ort_runner import OrtRunner, create_session, thread_count


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
    original = runner.run_one
    runner.run_one = lambda inputs: calls.append(len(inputs["x"])) or original(inputs)
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
    assert isinstance(results[1], ValueError) and "unexpected inputs" in str(results[1])


def test_incompatible_shapes_run_one_by_one(doubler):
    runner = OrtRunner(doubler, ["y"], batching=True)
    results = runner.run_many([{"x": np.ones((1, 3), np.float32)}, {"x": np.ones((1, 4), np.float32)}])
    np.testing.assert_array_equal(results[0]["y"], np.full((1, 3), 2, np.float32))
    assert isinstance(results[1], Exception)


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
