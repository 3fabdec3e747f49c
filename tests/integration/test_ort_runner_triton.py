"""The `onnxruntime` stand-in backend on the real tritonserver: in a dynamically batched model, a bad request
fails alone with a typed error, and the good requests batched with it get their answers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
from onnx import TensorProto, helper

from export_scripts.common import write_config
from launcher.triton import TritonServer
from triton_models.contract import INVALID_REQUEST, INVALID_TOKEN_IDS, ModelError

pytestmark = pytest.mark.integration

NAME, VOCAB, HIDDEN = "tiny-embedder", 50, 2
# Table row i is (i, 2i): an answer shows which ids it embedded.
TABLE = np.stack([np.arange(VOCAB), 2 * np.arange(VOCAB)], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """An embedding lookup as BERT exports it (a Gather over a Cast of input_ids), dynamically batched."""
    root = tmp_path_factory.mktemp("ort-repository")
    dims = ["batch", "sequence"]
    graph = helper.make_graph(
        [helper.make_node("Cast", ["input_ids"], ["ids32"], to=TensorProto.INT32),
         helper.make_node("Gather", ["table", "ids32"], ["rows"]),
         helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
         helper.make_node("Unsqueeze", ["maskf", "axes"], ["mask3"]),
         helper.make_node("Mul", ["rows", "mask3"], ["embedding"])],
        "embedder",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, dims),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, dims)],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [*dims, HIDDEN])],
        initializer=[helper.make_tensor("table", TensorProto.FLOAT, TABLE.shape, TABLE.ravel()),
                     helper.make_tensor("axes", TensorProto.INT64, [1], [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (root / NAME / "1").mkdir(parents=True)
    onnx.save(model, root / NAME / "1" / "model.onnx")
    write_config(root / NAME, {
        "name": NAME, "backend": "onnxruntime", "max_batch_size": 16,
        "input": [{"name": n, "data_type": "TYPE_INT64", "dims": [-1]} for n in ("input_ids", "attention_mask")],
        "output": [{"name": "embedding", "data_type": "TYPE_FP32", "dims": [-1, HIDDEN]}],
        # a long queue delay: the concurrent requests below reach the model as one batch
        "dynamic_batching": {"max_queue_delay_microseconds": 200_000},
        "instance_group": [{"kind": "KIND_CPU", "count": 1}],
    })
    with TritonServer(root, [NAME]) as running:
        yield running


def embed(url: str, ids: list[int], mask_length: int | None = None):
    """The embedding of `ids`, or the ModelError the model answered with."""
    client = grpcclient.InferenceServerClient(url)
    ids_array = np.array([ids], np.int64)
    mask = np.ones((1, mask_length or len(ids)), np.int64)
    inputs = [grpcclient.InferInput("input_ids", ids_array.shape, "INT64"),
              grpcclient.InferInput("attention_mask", mask.shape, "INT64")]
    inputs[0].set_data_from_numpy(ids_array)
    inputs[1].set_data_from_numpy(mask)
    try:
        return client.infer(NAME, inputs).as_numpy("embedding")[0]
    except grpcclient.InferenceServerException as exc:
        assert exc.status() == "StatusCode.INVALID_ARGUMENT", exc.message()
        return ModelError.decode(exc.message())
    finally:
        client.close()


def test_bad_requests_in_a_batch_fail_alone_with_typed_errors(server):
    good = [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]]
    bad = [([1, VOCAB, 3], None), ([1, -1, 3], None), ([1, 2, 3], 4)]  # two outside the vocabulary, one skewed
    for _ in range(2):  # the identical retry gets the identical answer
        with ThreadPoolExecutor(len(good) + len(bad)) as pool:
            answers = list(pool.map(lambda args: embed(server.grpc_url, *args), [(g, None) for g in good] + bad))
        for ids, answer in zip(good, answers):
            np.testing.assert_array_equal(answer, TABLE[ids])
        out_of_vocab, negative, skewed = answers[len(good):]
        for error, token in ((out_of_vocab, VOCAB), (negative, -1)):
            assert (error.code, error.param) == (INVALID_TOKEN_IDS, "input")
            assert error.message == (f"input holds token id {token}, outside this model's vocabulary: "
                                     f"valid token ids are 0 to {VOCAB - 1}")
        assert skewed.code == INVALID_REQUEST
        assert skewed.message == "inputs input_ids and attention_mask differ in their sequence dimension (3 and 4)"
